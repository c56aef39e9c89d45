package assign

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// TestPropComputeNowWithLaggingRing: with a ring synced to some other member
// set (or none), ComputeNow keeps validity, the bound and stickiness, and
// never touches the ring; once synced it equals Compute.
func TestPropComputeNowWithLaggingRing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		in.Shared = true
		a, err := NewAssigner(cfg)
		require.NoError(t, err)
		var stale []string
		if rapid.Bool().Draw(t, "some ring") {
			stale = RingMembers(Input{Members: memberNames(rapid.IntRange(1, 10).Draw(t, "stale members")),
				Sees: allSee(memberNames(10), []string{"f"})})
			_, err := a.Sync(context.Background(), stale)
			require.NoError(t, err)
		}
		out, err := a.ComputeNow(in)
		require.NoError(t, err)
		require.True(t, a.InSync(stale), "ComputeNow changed the ring")
		requireValid(t, in, out)
		u := newUniverse(in)
		c := capacity(len(u.eligible), len(u.active), cfg.withDefaults().Epsilon)
		if feasible(in, c) {
			require.LessOrEqualf(t, maxLoad(out), c, "feasible bound broken: loads %v", loads(out))
		}
		again := in
		again.Current = out
		same, err := a.ComputeNow(again)
		require.NoError(t, err)
		require.Equal(t, out, same, "ComputeNow of its own result moves files")

		members := RingMembers(in)
		_, err = a.Sync(context.Background(), members)
		require.NoError(t, err)
		require.True(t, a.InSync(members))
		exact, err := Compute(cfg, in)
		require.NoError(t, err)
		now, err := a.ComputeNow(in)
		require.NoError(t, err)
		require.Equal(t, exact, now, "a synced ring gives Compute's result")
	})
}

func TestSyncReportsColdAndIncremental(t *testing.T) {
	a, err := NewAssigner(Config{})
	require.NoError(t, err)
	ctx := context.Background()
	ms := memberNames(40)
	st, err := a.Sync(ctx, ms)
	require.NoError(t, err)
	require.True(t, st.Cold)
	require.Equal(t, 40, st.Added)
	st, err = a.Sync(ctx, ms)
	require.NoError(t, err)
	require.Equal(t, SyncStats{}, st, "nothing to do")
	st, err = a.Sync(ctx, append(ms[1:], "zz-new"))
	require.NoError(t, err)
	require.False(t, st.Cold)
	require.Equal(t, 1, st.Added)
	require.Equal(t, 1, st.Removed)
}

// TestSyncStopsWhenCancelled: a cancelled Sync keeps the last completed
// table and the members added so far; the next Sync finishes the ring, and
// it equals a fresh one.
func TestSyncStopsWhenCancelled(t *testing.T) {
	a, err := NewAssigner(Config{PartitionCount: 97})
	require.NoError(t, err)
	ms := memberNames(30)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = a.Sync(ctx, ms)
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, a.InSync(ms))
	_, err = a.Sync(context.Background(), ms)
	require.NoError(t, err)
	require.True(t, a.InSync(ms))
	x, err := buildIndex(Input{Members: ms, Sees: allSee(ms, []string{"f"})})
	require.NoError(t, err)
	fresh, err := NewAssigner(Config{PartitionCount: 97})
	require.NoError(t, err)
	require.Equal(t, fresh.syncRing(x), a.owners(x))
}

func TestTrySyncDoesOnlyCheapWork(t *testing.T) {
	a, err := NewAssigner(Config{})
	require.NoError(t, err)
	ms := memberNames(200)
	_, ok := a.TrySync(ms, 10_000)
	require.False(t, ok, "a cold ring of 200 is 20,000 units")
	require.False(t, a.InSync(ms))
	_, ok = a.TrySync(ms[:100], 10_000)
	require.True(t, ok, "a cold ring of 100 is 5,000")
	require.True(t, a.InSync(ms[:100]))
	st, ok := a.TrySync(ms[:101], 10_000)
	require.True(t, ok, "one join at 101 members")
	require.Equal(t, 1, st.Added)

	a.syncMu.Lock() // a Sync running elsewhere
	_, ok = a.TrySync(ms[:102], 10_000)
	a.syncMu.Unlock()
	require.False(t, ok, "never waits for a running Sync")
}
