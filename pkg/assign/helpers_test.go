package assign

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func memberNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("agent-%05d", i)
	}
	return out
}

func fileNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("/var/log/app/%07d.log", i)
	}
	return out
}

// allSee returns the Sees of a shared volume: every member reports the same
// slice (interned), as a coordinator that deduplicates reports would pass.
func allSee(members, files []string) map[string][]string {
	sees := make(map[string][]string, len(members))
	for _, m := range members {
		sees[m] = files
	}
	return sees
}

// universe is the test's own reading of the definitions in doc.go.
type universe struct {
	live     map[string]bool
	eligible map[string]map[string]bool // file -> members that see it
	active   map[string]bool
}

func newUniverse(in Input) universe {
	u := universe{live: map[string]bool{}, eligible: map[string]map[string]bool{}, active: map[string]bool{}}
	for _, m := range in.Members {
		if m != "" {
			u.live[m] = true
		}
	}
	for m, fs := range in.Sees {
		if !u.live[m] {
			continue
		}
		for _, f := range fs {
			if f == "" {
				continue
			}
			if u.eligible[f] == nil {
				u.eligible[f] = map[string]bool{}
			}
			u.eligible[f][m] = true
			u.active[m] = true
		}
	}
	return u
}

// bound is cap computed independently of capacity for the default epsilon.
func (u universe) bound() int {
	n, m := len(u.eligible), len(u.active)
	if n == 0 || m == 0 {
		return 0
	}
	return (5*n + 4*m - 1) / (4 * m)
}

func loads(out map[string]string) map[string]int {
	l := map[string]int{}
	for _, m := range out {
		l[m]++
	}
	return l
}

func maxLoad(out map[string]string) int {
	best := 0
	for _, l := range loads(out) {
		best = max(best, l)
	}
	return best
}

// requireValid checks rule 1 and completeness: every file with an eligible
// member is assigned, only to an eligible member, and nothing else is.
func requireValid(t require.TestingT, in Input, out map[string]string) {
	u := newUniverse(in)
	for f, m := range out {
		require.Truef(t, u.eligible[f][m], "file %q assigned to %q, which is not a live member that sees it", f, m)
	}
	for f := range u.eligible {
		_, ok := out[f]
		require.Truef(t, ok, "file %q has eligible members %v but is unassigned", f, slices.Sorted(maps.Keys(u.eligible[f])))
	}
}

// moved counts files whose member differs between two assignments.
func moved(before, after map[string]string) int {
	return len(Diff(before, after))
}

// feasible reports whether the files of in can be assigned within limit per
// member (bipartite b-matching by augmenting paths; test sizes only).
func feasible(in Input, limit int) bool {
	u := newUniverse(in)
	files := slices.Sorted(maps.Keys(u.eligible))
	held := map[string][]string{}
	var try func(f string, seen map[string]bool) bool
	try = func(f string, seen map[string]bool) bool {
		for _, m := range slices.Sorted(maps.Keys(u.eligible[f])) {
			if seen[m] {
				continue
			}
			seen[m] = true
			if len(held[m]) < limit {
				held[m] = append(held[m], f)
				return true
			}
			for i, g := range held[m] {
				if try(g, seen) {
					held[m][i] = f
					return true
				}
			}
		}
		return false
	}
	for _, f := range files {
		if !try(f, map[string]bool{}) {
			return false
		}
	}
	return true
}

// shuffled returns a copy of in with the same contents in another shape:
// members shuffled and duplicated, every Sees slice copied (no interning),
// shuffled and given duplicates.
func shuffled(in Input, rng *rand.Rand) Input {
	out := Input{Shared: in.Shared, Sees: map[string][]string{}, Current: maps.Clone(in.Current)}
	out.Members = slices.Clone(in.Members)
	if len(in.Members) > 0 {
		out.Members = append(out.Members, in.Members[rng.IntN(len(in.Members))])
	}
	rng.Shuffle(len(out.Members), func(i, j int) { out.Members[i], out.Members[j] = out.Members[j], out.Members[i] })
	for m, fs := range in.Sees {
		c := slices.Clone(fs)
		if len(fs) > 0 {
			c = append(c, fs[rng.IntN(len(fs))])
		}
		rng.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
		out.Sees[m] = c
	}
	return out
}

// movementStats summarises a chain of joins and leaves on a shared volume.
type movementStats struct {
	join, leave []float64 // files moved / minimum, per operation
	maxLoad     float64   // largest member load / (files/members), over all results
	overBound   int       // results with a member above cap
}

func avgMax(xs []float64) (avg, worst float64) {
	for _, x := range xs {
		avg += x
		worst = max(worst, x)
	}
	if len(xs) > 0 {
		avg /= float64(len(xs))
	}
	return avg, worst
}

// simulateMovement runs trials on a shared volume (every member sees every
// file). Each trial uses fresh random member and file names, computes an
// initial assignment of nFiles over nMembers, applies warmup unmeasured
// random joins or leaves (so loads carry history and the member count
// drifts), then measures one join and, from the same state, one leave of a
// random member. The minimum for a join is files/members after it (the
// newcomer's fair share); for a leave, the number of files the leaver held.
func simulateMovement(tb testing.TB, nMembers, nFiles, trials, warmup int, seed uint64) movementStats {
	rng := rand.New(rand.NewPCG(seed, 42))
	var st movementStats
	for trial := 0; trial < trials; trial++ {
		a, err := NewAssigner(Config{})
		require.NoError(tb, err)
		prefix := fmt.Sprintf("t%d-%x-", trial, rng.Uint32())
		files := fileNames(nFiles)
		for i := range files {
			files[i] = prefix + files[i]
		}
		members := make([]string, nMembers)
		for i := range members {
			members[i] = fmt.Sprintf("%sagent-%d", prefix, i)
		}
		next := nMembers
		compute := func(members []string, cur map[string]string) map[string]string {
			in := Input{Shared: true, Members: members, Sees: allSee(members, files), Current: cur}
			out, err := a.Compute(in)
			require.NoError(tb, err)
			st.check(tb, members, nFiles, out)
			return out
		}
		join := func(members []string) []string {
			next++
			return append(slices.Clone(members), fmt.Sprintf("%sagent-%d", prefix, next))
		}
		leave := func(members []string) ([]string, string) {
			i := rng.IntN(len(members))
			return slices.Delete(slices.Clone(members), i, i+1), members[i]
		}
		cur := compute(members, nil)
		for w := 0; w < warmup; w++ {
			if rng.IntN(2) == 0 || len(members) < 2 {
				members = join(members)
			} else {
				members, _ = leave(members)
			}
			cur = compute(members, cur)
		}
		joined := join(members)
		out := compute(joined, cur)
		st.join = append(st.join, float64(moved(cur, out))/(float64(nFiles)/float64(len(joined))))
		if len(members) > 1 {
			left, leaver := leave(members)
			out = compute(left, cur)
			ratio := float64(moved(cur, out)) // a leaver without files: any move is excess
			if n := loads(cur)[leaver]; n > 0 {
				ratio /= float64(n)
			}
			st.leave = append(st.leave, ratio)
		}
	}
	return st
}

// check records the largest load and bound violations of one result, and
// checks validity cheaply: every member sees every file, so a result is
// valid when it assigns every file to a live member.
func (st *movementStats) check(tb testing.TB, members []string, nFiles int, out map[string]string) {
	live := map[string]bool{}
	for _, m := range members {
		live[m] = true
	}
	require.Lenf(tb, out, nFiles, "every file must be assigned")
	ml := 0
	for m, n := range loads(out) {
		require.Truef(tb, live[m], "file assigned to %q, which is not a live member", m)
		ml = max(ml, n)
	}
	if ml > capacity(nFiles, len(members), DefaultEpsilon) {
		st.overBound++
	}
	st.maxLoad = max(st.maxLoad, float64(ml)*float64(len(members))/float64(nFiles))
}
