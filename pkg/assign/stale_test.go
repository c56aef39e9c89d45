package assign

import (
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
			a.Sync(stale)
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
		a.Sync(members)
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
	ms := memberNames(40)
	st := a.Sync(ms)
	require.True(t, st.Cold)
	require.Equal(t, 40, st.Added)
	st = a.Sync(ms)
	require.Equal(t, SyncStats{}, st, "nothing to do")
	st = a.Sync(append(ms[1:], "zz-new"))
	require.False(t, st.Cold)
	require.Equal(t, 1, st.Added)
	require.Equal(t, 1, st.Removed)
}
