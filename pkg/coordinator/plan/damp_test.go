package plan

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/protocol"
)

const localCfg = `{"paths":["/var/log/*.log"]}`

// fleet makes n agents of a local topic with per files each, converged.
func fleet(t *testing.T, p *Planner, n, per int, now time.Time) *world {
	w := newWorld(t)
	w.topic("logs", localCfg)
	for i := range n {
		agent := fmt.Sprintf("a%02d", i)
		var fs []string
		for j := range per {
			fs = append(fs, fmt.Sprintf("%s-f%02d", agent, j))
		}
		w.heartbeat("logs", agent, fs...)
	}
	converge(t, w, p, now)
	return w
}

// massLeaseLoss converges 10 agents of 10 local files each with a planner
// of the given owner-gone rate, then drops 8 of their heartbeats.
func massLeaseLoss(t *testing.T, rate float64, now time.Time) (*Planner, *world) {
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, OwnerGoneRate: rate})
	require.NoError(t, err)
	w := fleet(t, p, 10, 10, now)
	for i := range 8 {
		w.del(ks.Heartbeat("logs", fmt.Sprintf("a%02d", i)))
	}
	return p, w
}

func countKind(pl *Plan, kind ActionKind, reason string) int {
	n := 0
	for _, g := range pl.Groups {
		for _, a := range g.Actions {
			if a.Kind == kind && a.Reason == reason {
				n++
			}
		}
	}
	return n
}

func TestOwnerGoneIsDampedByRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p, w := massLeaseLoss(t, 20, t0)
	pl, err := p.Plan(w.s, t0)
	require.NoError(t, err)
	require.Equal(t, 20, countKind(pl, Delete, ReasonOwnerGone), "a budget of 20 files: two agents of 10 at once")
	require.Equal(t, 60, pl.GoneDeferred)
	require.Equal(t, 6, pl.GoneAgents)
	require.Equal(t, 60, pl.NewlyDeferred)
	require.False(t, pl.NextDeadline.IsZero(), "a pass is due when the budget refills")
	require.True(t, pl.NextDeadline.Before(t0.Add(time.Second)))
	w.apply(pl)

	// An agent whose lease came back keeps its files untouched.
	var back []string
	for j := range 10 {
		back = append(back, fmt.Sprintf("a07-f%02d", j))
	}
	w.heartbeat("logs", "a07", back...)
	pl, err = p.Plan(w.s, t0.Add(100*time.Millisecond))
	require.NoError(t, err)
	require.Equal(t, 10, countKind(pl, Delete, ReasonOwnerGone), "budget 2 files after 100 ms: one more agent (in debt)")
	require.Equal(t, 40, pl.GoneDeferred)
	require.Zero(t, pl.NewlyDeferred, "counted once per agent")
	for _, g := range pl.Groups {
		require.NotContains(t, g.File, "a07", "the returning agent's files are not touched")
	}
	w.apply(pl)

	// Given time, every dead agent is torn down.
	now := t0.Add(200 * time.Millisecond)
	for range 20 {
		pl, err = p.Plan(w.s, now)
		require.NoError(t, err)
		w.apply(pl)
		if pl.GoneDeferred == 0 {
			break
		}
		now = pl.NextDeadline
	}
	require.Zero(t, pl.GoneDeferred)
	require.Less(t, now.Sub(t0), 3*time.Second, "60 files at 20/s")
	require.Len(t, w.holders("logs"), 30, "the two live agents and the returning one keep theirs")
}

func TestOwnerGoneWithoutRateIsImmediate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p, w := massLeaseLoss(t, 0, t0)
	pl, err := p.Plan(w.s, t0)
	require.NoError(t, err)
	require.Equal(t, 80, countKind(pl, Delete, ReasonOwnerGone))
	require.Zero(t, pl.GoneDeferred)
}

func TestNegativeOwnerGoneRateIsRejected(t *testing.T) {
	_, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, OwnerGoneRate: -1})
	require.ErrorIs(t, err, ErrOptions)
	require.ErrorContains(t, err, "-1")
}

func TestAsyncRingsAreNeverBuiltByPlan(t *testing.T) {
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, AsyncRings: true})
	require.NoError(t, err)
	w := newWorld(t)
	w.topic("web", sharedCfg)
	fs := files(300)
	var members []string
	for i := range 200 { // a cold ring of 200 is more than Plan does itself
		a := fmt.Sprintf("a%03d", i)
		members = append(members, a)
		w.heartbeat("web", a, fs...)
	}
	now := time.Now()
	pl, err := p.Plan(w.s, now)
	require.NoError(t, err)
	require.Len(t, pl.Groups, 300, "every file assigned without a ring")
	require.Len(t, pl.Rings, 1)
	rw := pl.Rings[0]
	require.Equal(t, "web", rw.Topic)
	require.Equal(t, members, rw.Members)
	require.False(t, rw.Assigner.InSync(rw.Members), "Plan did not build the ring")
	w.apply(pl)

	st, err := rw.Assigner.Sync(context.Background(), rw.Members)
	require.NoError(t, err)
	require.True(t, st.Cold)
	pl, err = p.Plan(w.s, now)
	require.NoError(t, err)
	require.Empty(t, pl.Rings)
	require.Empty(t, pl.Groups, "the ring catching up moves nothing")

	// One join is cheap: Plan syncs it itself, and says so.
	w.heartbeat("web", "joiner", fs...)
	pl, err = p.Plan(w.s, now)
	require.NoError(t, err)
	require.Empty(t, pl.Rings)
	require.Len(t, pl.RingSyncs, 1)
	require.Equal(t, 1, pl.RingSyncs[0].Stats.Added)

	// A new term keeps the warm ring.
	p.Reset()
	a, err := p.assigner("web")
	require.NoError(t, err)
	require.Same(t, rw.Assigner, a)
	require.True(t, a.InSync(append(members, "joiner")))
}

func TestStandbyRingsFollowMembers(t *testing.T) {
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, AsyncRings: true})
	require.NoError(t, err)
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.topic("logs", localCfg)
	w.heartbeat("web", "a", "f1")
	w.heartbeat("web", "b", "f1")
	w.heartbeat("web", "idle")
	w.heartbeat("logs", "a", "x")
	work, err := p.Rings(w.s)
	require.NoError(t, err)
	require.Len(t, work, 1, "shared topics only")
	require.Equal(t, []string{"a", "b"}, work[0].Members, "members that see files")
	_, err = work[0].Assigner.Sync(context.Background(), work[0].Members)
	require.NoError(t, err)
	work, err = p.Rings(w.s)
	require.NoError(t, err)
	require.Empty(t, work)
	w.del(ks.Topic("web"))
	_, err = p.Rings(w.s)
	require.NoError(t, err)
	require.Empty(t, p.assigners, "a removed topic's ring is dropped")
}

// mixedWorld has a shared topic whose agent sees n files and a local topic
// where it sees l1 and l2.
func mixedWorld(t *testing.T, shared, local, agent string, n int) *world {
	w := newWorld(t)
	w.topic(shared, sharedCfg)
	w.topic(local, localCfg)
	w.heartbeat(shared, agent, files(n)...)
	w.heartbeat(local, agent, "l1", "l2")
	return w
}

func TestLocalTopicsAreWrittenFirst(t *testing.T) {
	p := newPlanner(t, time.Minute)
	w := mixedWorld(t, "a-shared", "b-local", "x", 5)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Len(t, pl.Groups, 7)
	require.Equal(t, "b-local", pl.Groups[0].Topic)
	require.Equal(t, "b-local", pl.Groups[1].Topic)
	require.Equal(t, protocol.TopicOK, pl.Topics[0].State)
}

// A topic planned to no effect is not planned again until it changes; its
// status is reused (checkpoint counts refreshed).
func TestQuietTopicsAreSkipped(t *testing.T) {
	p := newPlanner(t, time.Minute)
	w := mixedWorld(t, "web", "logs", "a", 4)
	now := time.Now()
	converge(t, w, p, now)
	first, err := p.Plan(w.s, now)
	require.NoError(t, err)
	require.Equal(t, 2, first.Skipped)

	w.put(ks.Offset("logs", "l1"), []byte(`{}`))
	w.heartbeat("web", "b", files(4)...)
	pl, err := p.Plan(w.s, now)
	require.NoError(t, err)
	require.Equal(t, 1, pl.Skipped, "only the changed topic is planned")
	require.NotEmpty(t, pl.Groups, "b takes files")
	require.Equal(t, 1, pl.Topics[0].Checkpoints, "logs: a skipped topic's checkpoints still counted")
	require.Equal(t, 2, pl.Topics[0].Files)
	require.Equal(t, first.Assignments, pl.Assignments)
}

// Within the grace no gone agent loses anything, and none is charged to the
// rate; an agent back within it keeps its files; after it, the rest go as
// the rate allows.
func TestOwnerGoneGraceKeepsReturningAgents(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, OwnerGoneRate: 1000, OwnerGoneGrace: 10 * time.Second})
	require.NoError(t, err)
	w := fleet(t, p, 10, 10, t0)
	for i := range 8 {
		w.del(ks.Heartbeat("logs", fmt.Sprintf("a%02d", i)))
	}
	pl, err := p.Plan(w.s, t0)
	require.NoError(t, err)
	require.Empty(t, pl.Groups, "nothing torn down within the grace")
	require.Equal(t, 80, pl.GoneInGrace)
	require.Zero(t, pl.GoneDeferred)
	require.Equal(t, t0.Add(10*time.Second), pl.NextDeadline, "a pass is due when the grace ends")

	// Seven come back within the grace, with the same files.
	for i := range 7 {
		agent := fmt.Sprintf("a%02d", i)
		var fs []string
		for j := range 10 {
			fs = append(fs, fmt.Sprintf("%s-f%02d", agent, j))
		}
		w.heartbeat("logs", agent, fs...)
	}
	pl, err = p.Plan(w.s, t0.Add(9*time.Second))
	require.NoError(t, err)
	require.Empty(t, pl.Groups, "the returning agents keep their files")
	require.Equal(t, 10, pl.GoneInGrace)

	// The one still gone after the grace is torn down.
	pl, err = p.Plan(w.s, t0.Add(10*time.Second))
	require.NoError(t, err)
	require.Equal(t, 10, countKind(pl, Delete, ReasonOwnerGone))
	require.Zero(t, pl.GoneInGrace)

	_, err = NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, OwnerGoneGrace: -time.Second})
	require.ErrorIs(t, err, ErrOptions)
}
