package assign

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/stretchr/testify/require"
)

// BenchmarkCompute times one computation of a shared topic where every
// member sees every file (one interned slice). The Assigner's ring is built
// in the untimed setup; BenchmarkRingBuild times that separately.
//
//	initial: nothing assigned yet: every file is placed.
//	steady:  Current is the previous result: nothing moves.
//	join:    one member more than Current knows (includes one ring Add).
func BenchmarkCompute(b *testing.B) {
	for _, sz := range []struct{ members, files int }{{1_000, 100_000}, {10_000, 1_000_000}} {
		b.Run(fmt.Sprintf("members=%d/files=%d", sz.members, sz.files), func(b *testing.B) {
			if sz.members >= 10_000 && testing.Short() {
				b.Skip("10k members: ring setup takes about a minute; skipped with -short")
			}
			members, files := memberNames(sz.members), fileNames(sz.files)
			in := Input{Shared: true, Members: members, Sees: allSee(members, files)}
			a, err := NewAssigner(Config{})
			require.NoError(b, err)
			first, err := a.Compute(in) // builds the ring
			require.NoError(b, err)

			b.Run("initial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					_, err := a.Compute(in)
					require.NoError(b, err)
				}
			})
			b.Run("steady", func(b *testing.B) {
				steady := in
				steady.Current = first
				b.ReportAllocs()
				for b.Loop() {
					_, err := a.Compute(steady)
					require.NoError(b, err)
				}
			})
			b.Run("join", func(b *testing.B) {
				joined := slices.Concat(members, []string{"agent-joiner"})
				join := Input{Shared: true, Members: joined, Sees: allSee(joined, files), Current: first}
				b.ReportAllocs()
				var out map[string]string
				for b.Loop() {
					out, err = a.Compute(join)
					require.NoError(b, err)
				}
				b.ReportMetric(float64(moved(first, out)), "moved")
			})
		})
	}
}

// BenchmarkRingBuild times consistent.New for the default config: what the
// first Compute of an Assigner (or every package-level Compute) pays.
func BenchmarkRingBuild(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n >= 10_000 && testing.Short() {
				b.Skip("takes about a minute; skipped with -short")
			}
			ms := make([]consistent.Member, n)
			for i, name := range memberNames(n) {
				ms[i] = ringMember(name)
			}
			cfg := consistent.Config{Hasher: hasher{}, PartitionCount: DefaultPartitionCount,
				ReplicationFactor: DefaultReplicationFactor, Load: 1 + DefaultEpsilon}
			b.ReportAllocs()
			for b.Loop() {
				consistent.New(ms, cfg)
			}
		})
	}
}

// BenchmarkMovement reports movement on a shared volume of 100 files per
// member, over trials that each start from a random history (see
// simulateMovement): files moved by one join and by one leave as a multiple
// of the minimum (join: files/members after it; leave: the leaver's files),
// average and worst; the largest member load as a multiple of files/members
// over every result computed; and how many results broke the bound (must be
// 0). Time per op is meaningless here. More iterations (-benchtime Nx) add
// trials with other seeds.
func BenchmarkMovement(b *testing.B) {
	for _, c := range []struct{ members, trials, warmup int }{{10, 100, 10}, {100, 40, 10}, {1_000, 10, 6}} {
		b.Run(fmt.Sprintf("members=%d", c.members), func(b *testing.B) {
			var all movementStats
			seed := uint64(0)
			for b.Loop() {
				seed++
				st := simulateMovement(b, c.members, 100*c.members, c.trials, c.warmup, seed)
				all.join = append(all.join, st.join...)
				all.leave = append(all.leave, st.leave...)
				all.maxLoad = max(all.maxLoad, st.maxLoad)
				all.overBound += st.overBound
			}
			ja, jw := avgMax(all.join)
			la, lw := avgMax(all.leave)
			b.ReportMetric(float64(len(all.join)), "joins")
			b.ReportMetric(ja, "join-avg-x")
			b.ReportMetric(jw, "join-worst-x")
			b.ReportMetric(float64(len(all.leave)), "leaves")
			b.ReportMetric(la, "leave-avg-x")
			b.ReportMetric(lw, "leave-worst-x")
			b.ReportMetric(all.maxLoad, "maxload-x")
			b.ReportMetric(float64(all.overBound), "over-bound")
		})
	}
}

// BenchmarkSyncIncremental times what a warm Assigner pays for membership
// changes: Sync of one member joining and of one leaving (the ring is built
// once in the untimed setup), and ComputeNow while a join is not yet in the
// ring (what the coordinator's reconciler pays instead of waiting).
func BenchmarkSyncIncremental(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n >= 10_000 && testing.Short() {
				b.Skip("ring setup takes about a minute; skipped with -short")
			}
			members := memberNames(n)
			a, err := NewAssigner(Config{})
			require.NoError(b, err)
			ctx := context.Background()
			_, err = a.Sync(ctx, members)
			require.NoError(b, err)
			joined := slices.Concat(members, []string{"zz-joiner"})
			b.Run("join+leave", func(b *testing.B) {
				for b.Loop() {
					_, _ = a.Sync(ctx, joined)
					_, _ = a.Sync(ctx, members)
				}
			})
			b.Run("computenow-lagging-join/files=10x", func(b *testing.B) {
				files := fileNames(10 * n)
				in := Input{Shared: true, Members: joined, Sees: allSee(joined, files)}
				for b.Loop() {
					_, err := a.ComputeNow(in)
					require.NoError(b, err)
				}
			})
		})
	}
}
