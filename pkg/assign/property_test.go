package assign

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// genCase draws a small topic: a pool of members of which some are live
// (with duplicates), a non-member that reports files too, files seen by
// everyone (one interned slice) or by random subsets, and a Current that
// names live, dead and idle members and files that no longer exist.
func genCase(t *rapid.T) (Config, Input) {
	pool := memberNames(rapid.IntRange(1, 8).Draw(t, "pool"))
	files := fileNames(rapid.IntRange(0, 30).Draw(t, "files"))
	in := Input{Shared: rapid.Bool().Draw(t, "shared"), Sees: map[string][]string{}, Current: map[string]string{}}
	for _, m := range pool {
		for n := rapid.IntRange(0, 2).Draw(t, "copies of "+m); n > 0; n-- {
			in.Members = append(in.Members, m)
		}
	}
	allSee := rapid.Bool().Draw(t, "all see all")
	for _, m := range append(slices.Clone(pool), "not-a-member") {
		if allSee {
			in.Sees[m] = files
			continue
		}
		for _, f := range files {
			if rapid.IntRange(0, 2).Draw(t, "sees") > 0 {
				in.Sees[m] = append(in.Sees[m], f)
			}
		}
	}
	holders := append(slices.Clone(pool), "dead", "not-a-member")
	for _, f := range append(slices.Clone(files), "gone") {
		if rapid.Bool().Draw(t, "assigned") {
			in.Current[f] = rapid.SampledFrom(holders).Draw(t, "holder")
		}
	}
	cfg := Config{
		Epsilon:           rapid.SampledFrom([]float64{0, 0.05, 0.5, 1}).Draw(t, "eps"),
		PartitionCount:    rapid.SampledFrom([]int{0, 1, 7, 31}).Draw(t, "partitions"),
		ReplicationFactor: rapid.SampledFrom([]int{0, 1, 3}).Draw(t, "replication"),
	}
	return cfg, in
}

func computeT(t *rapid.T, cfg Config, in Input) map[string]string {
	out, err := Compute(cfg, in)
	require.NoError(t, err, "Compute")
	return out
}

// Rule 1 (and completeness): only eligible members; local topics keep the
// current member if eligible, else take the smallest eligible id.
func TestPropValid(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		out := computeT(t, cfg, in)
		requireValid(t, in, out)
		if in.Shared {
			return
		}
		u := newUniverse(in)
		for f, ms := range u.eligible {
			want := slices.Min(slices.Collect(maps.Keys(ms)))
			if cur := in.Current[f]; ms[cur] {
				want = cur
			}
			require.Equalf(t, want, out[f], "local file %q: eligible %v, current %q", f, ms, in.Current[f])
		}
	})
}

// Rule 2: on shared topics the bound holds whenever it is feasible.
func TestPropBound(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		in.Shared = true
		out := computeT(t, cfg, in)
		u := newUniverse(in)
		c := capacity(len(u.eligible), len(u.active), cfg.withDefaults().Epsilon)
		if feasible(in, c) {
			require.LessOrEqualf(t, maxLoad(out), c, "feasible bound broken: loads %v", loads(out))
		}
	})
}

// Rule 3: the same contents in any shape give the same result, with a cold
// or a warm ring.
func TestPropDeterministic(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		want := computeT(t, cfg, in)
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1))
		other := shuffled(in, rng)
		require.Equal(t, want, computeT(t, cfg, other), "shuffled input")
		a, err := NewAssigner(cfg)
		require.NoError(t, err)
		_, err = a.Compute(Input{Shared: true, Members: []string{"x", "y"}, Sees: map[string][]string{"x": {"f"}, "y": {"f"}}})
		require.NoError(t, err)
		got, err := a.Compute(other)
		require.NoError(t, err)
		require.Equal(t, want, got, "warm Assigner")
	})
}

// Rule 4: the result is a fixed point, and a valid assignment of every file
// within the bound in which nobody is starved is kept unchanged.
func TestPropStable(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		out := computeT(t, cfg, in)
		again := in
		again.Current = out
		require.Empty(t, Diff(out, computeT(t, cfg, again)), "recomputing from the result")
	})
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		in.Shared = true
		u := newUniverse(in)
		n, m := len(u.eligible), len(u.active)
		if n == 0 {
			return
		}
		// A random complete, valid assignment.
		in.Current = map[string]string{}
		for _, f := range slices.Sorted(maps.Keys(u.eligible)) {
			in.Current[f] = rapid.SampledFrom(slices.Sorted(maps.Keys(u.eligible[f]))).Draw(t, "holder of "+f)
		}
		c, target := capacity(n, m, cfg.withDefaults().Epsilon), n/m
		l := loads(in.Current)
		settled := true
		for a := range u.active {
			if l[a] > c || 2*l[a] < target {
				settled = false // over the bound or starved: moves are allowed
			}
		}
		out := computeT(t, cfg, in)
		if settled {
			require.Empty(t, Diff(in.Current, out), "a settled assignment must not move")
		}
	})
}

// CurrentOf and Result are another shape for the same computation: the
// same input as a function gives the same assignment, and the Result
// answers as the map does.
func TestPropCurrentOfAndResultMatchCompute(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg, in := genCase(t)
		want := computeT(t, cfg, in)
		byFunc := in
		current := in.Current
		byFunc.Current = nil
		byFunc.CurrentOf = func(f string) string { return current[f] }
		a, err := NewAssigner(cfg)
		require.NoError(t, err)
		r, err := a.ComputeResult(byFunc)
		require.NoError(t, err)
		require.Equal(t, want, r.Map())
		require.Equal(t, len(want), r.Len())
		for _, f := range append(slices.Collect(maps.Keys(in.Current)), "never-seen") {
			m, ok := r.Owner(f)
			wm, wok := want[f]
			require.Equalf(t, wok, ok, "Owner(%q)", f)
			require.Equalf(t, wm, m, "Owner(%q)", f)
		}
	})
}
