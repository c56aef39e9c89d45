package plan

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/assign"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
)

var ks = keyspace.Space{}

const sharedCfg = `{"paths":["/shared/*.log"],"shared":true}`

// world builds a State the way the mirror would feed it.
type world struct {
	t   *testing.T
	s   *State
	rev int64
}

func newWorld(t *testing.T) *world { return &world{t: t, s: NewState(ks)} }

func (w *world) put(key string, value []byte) {
	w.rev++
	create := w.rev
	if a, ok := w.s.AssignKV(key); ok {
		create = a.CreateRev
	}
	w.s.Apply(mirror.Event{Type: mirror.Put, KV: mirror.KV{Key: key, Value: value, CreateRevision: create, ModRevision: w.rev}})
	w.s.SetRevision(w.rev)
}

func (w *world) del(key string) {
	w.rev++
	w.s.Apply(mirror.Event{Type: mirror.Delete, KV: mirror.KV{Key: key}})
	w.s.SetRevision(w.rev)
}

func (w *world) topic(name, cfg string) { w.put(ks.Topic(name), []byte(cfg)) }

func (w *world) heartbeat(topic, agent string, files ...string) {
	hb := protocol.Heartbeat{Agent: agent}
	for _, f := range files {
		hb.Files = append(hb.Files, protocol.SeenFile{Key: f, Path: "/shared/" + f + ".log"})
	}
	raw, err := protocol.Marshal(&hb)
	require.NoError(w.t, err)
	w.put(ks.Heartbeat(topic, agent), raw)
}

func (w *world) assignment(topic, agent, file, state, next string) {
	raw, err := protocol.Marshal(&protocol.Assignment{State: state, Path: "/shared/" + file + ".log", Leader: "old", Revoking: next})
	require.NoError(w.t, err)
	w.put(ks.Assign(agent, topic, file), raw)
}

// apply commits a plan's operations to the world, as etcd would.
func (w *world) apply(p *Plan) {
	for _, g := range p.Groups {
		for i, a := range g.Actions {
			if a.Kind == Delete {
				w.del(a.Key)
				continue
			}
			op := g.Ops[i]
			w.put(string(op.KeyBytes()), op.ValueBytes())
		}
	}
}

// release plays the agent: every revoking key is released (deleted).
func (w *world) release() int {
	n := 0
	for _, name := range w.s.TopicNames() {
		for _, hs := range w.s.Topic(name).Assigns {
			for a := range hs.All() {
				if a.Revoking() {
					defer w.del(w.s.Topic(name).Key(a))
					n++
				}
			}
		}
	}
	return n
}

// holders returns file -> agents holding a key, for one topic.
func (w *world) holders(topic string) map[string][]string {
	out := map[string][]string{}
	t := w.s.Topic(topic)
	if t == nil {
		return out
	}
	for f, hs := range t.Assigns {
		out[f] = hs.agents()
	}
	return out
}

func newPlanner(t *testing.T, timeout time.Duration) *Planner {
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: timeout})
	require.NoError(t, err)
	return p
}

func files(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("f%02d", i)
	}
	return out
}

func actions(p *Plan) []string {
	var out []string
	for _, g := range p.Groups {
		for _, a := range g.Actions {
			out = append(out, fmt.Sprintf("%v %s %s->%s", a.Kind, g.File, a.Agent, a.To))
		}
	}
	return out
}

// converge plans, applies and releases until a plan has nothing to do,
// checking after every step that no file has two keys.
func converge(t *testing.T, w *world, p *Planner, now time.Time) int {
	t.Helper()
	for i := range 20 {
		pl, err := p.Plan(w.s, now)
		require.NoError(t, err)
		if len(pl.Groups) == 0 && w.release() == 0 {
			return i
		}
		w.apply(pl)
		for _, name := range w.s.TopicNames() {
			for f, hs := range w.holders(name) {
				require.LessOrEqual(t, len(hs), 1, "file %s/%s has keys of %v", name, f, hs)
			}
		}
		w.release()
	}
	t.Fatal("no convergence in 20 passes")
	return 0
}

func TestFreshTopicAssignsEveryFileOnce(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	fs := files(12)
	for _, a := range []string{"a", "b", "c"} {
		w.heartbeat("web", a, fs...)
	}
	p := newPlanner(t, time.Minute)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Len(t, pl.Groups, 12, "one group per file")
	want, err := assign.Compute(assign.Config{}, assign.Input{Shared: true, Members: []string{"a", "b", "c"},
		Sees: map[string][]string{"a": fs, "b": fs, "c": fs}})
	require.NoError(t, err)
	for _, g := range pl.Groups {
		require.Len(t, g.Actions, 1)
		a := g.Actions[0]
		require.Equal(t, Assign, a.Kind)
		require.Equal(t, want[g.File], a.Agent)
		require.Len(t, g.Cmps, 1, "a new file's key is guarded by its absence")
		var v protocol.Assignment
		require.NoError(t, protocol.Unmarshal("test", g.Ops[0].ValueBytes(), &v))
		require.Equal(t, protocol.Assignment{V: 1, State: protocol.StateActive, Path: "/shared/" + g.File + ".log", Leader: "L"}, v)
	}
	w.apply(pl)
	pl, err = p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Empty(t, pl.Groups, "a converged state plans nothing: a failover moves nothing")
	require.Equal(t, 12, pl.Assignments)
	require.Equal(t, 3, pl.Members)
	st := pl.Topics[0]
	require.Equal(t, protocol.TopicOK, st.State)
	require.Equal(t, 12, st.Assigned)
	require.Zero(t, st.Unassigned)
}

func TestJoinHandsOverThroughRevoke(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	fs := files(12)
	w.heartbeat("web", "a", fs...)
	w.heartbeat("web", "b", fs...)
	p := newPlanner(t, time.Minute)
	now := time.Now()
	converge(t, w, p, now)
	before := map[string]string{}
	for f, hs := range w.holders("web") {
		before[f] = hs[0]
	}

	w.heartbeat("web", "c", fs...)
	want, err := assign.Compute(assign.Config{}, assign.Input{Shared: true, Members: []string{"a", "b", "c"},
		Sees: map[string][]string{"a": fs, "b": fs, "c": fs}, Current: before})
	require.NoError(t, err)
	moving := assign.Diff(before, want)
	require.NotEmpty(t, moving)

	pl, err := p.Plan(w.s, now)
	require.NoError(t, err)
	var got []string
	for _, g := range pl.Groups {
		require.Len(t, g.Actions, 1, "a move starts with the revoke alone: %v", actions(pl))
		a := g.Actions[0]
		require.Equal(t, Revoke, a.Kind)
		require.Equal(t, ReasonRebalance, a.Reason)
		require.Equal(t, "c", a.To)
		got = append(got, g.File)
	}
	var wantFiles []string
	for _, m := range moving {
		wantFiles = append(wantFiles, m.File)
	}
	require.Equal(t, wantFiles, got)
	require.False(t, pl.NextDeadline.IsZero(), "a handover has a deadline")
	w.apply(pl)

	// Before the release nothing more happens, however often it is planned.
	pl, err = p.Plan(w.s, now.Add(time.Second))
	require.NoError(t, err)
	require.Empty(t, pl.Groups)
	require.Equal(t, len(moving), pl.Pending)

	// Release one file: only then is it assigned to c, guarded by the
	// released key's absence.
	f := moving[0].File
	from := ks.Assign(moving[0].From, "web", f)
	w.del(from)
	pl, err = p.Plan(w.s, now.Add(time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"assign " + f + " c->"}, actions(pl))
	require.Len(t, pl.Groups[0].Cmps, 2, "guards: the new key and the released key are both absent")
	w.apply(pl)

	converge(t, w, p, now.Add(time.Second))
	final := map[string]string{}
	for f, hs := range w.holders("web") {
		require.Len(t, hs, 1)
		final[f] = hs[0]
	}
	require.Equal(t, want, final, "the handover ends where the first computation said")
}

func TestDeadOwnerSwapsInOneGroup(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	fs := files(6)
	w.heartbeat("web", "a", fs...)
	w.heartbeat("web", "b", fs...)
	p := newPlanner(t, time.Minute)
	converge(t, w, p, time.Now())
	var aFiles []string
	for f, hs := range w.holders("web") {
		if hs[0] == "a" {
			aFiles = append(aFiles, f)
		}
	}
	require.NotEmpty(t, aFiles)
	slices.Sort(aFiles)

	w.del(ks.Heartbeat("web", "a")) // a's lease expired
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Len(t, pl.Groups, len(aFiles))
	for i, g := range pl.Groups {
		require.Equal(t, aFiles[i], g.File)
		require.Equal(t, []string{"delete " + g.File + " a->b", "assign " + g.File + " b->"}, actions(&Plan{Groups: []Group{g}}),
			"the dead owner's key goes and the new owner's comes in the same Txn")
		require.Equal(t, ReasonOwnerGone, g.Actions[0].Reason)
	}
	w.apply(pl)
	for f, hs := range w.holders("web") {
		require.Equal(t, []string{"b"}, hs, f)
	}
}

func TestHandoverTimeout(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	fs := files(4)
	w.heartbeat("web", "a", fs...)
	w.heartbeat("web", "b", fs...)
	w.assignment("web", "a", "f00", protocol.StateRevoking, "b")
	w.assignment("web", "b", "f01", protocol.StateActive, "")
	w.assignment("web", "a", "f02", protocol.StateActive, "")
	w.assignment("web", "b", "f03", protocol.StateActive, "")
	p := newPlanner(t, 30*time.Second)
	t0 := time.Now()
	pl, err := p.Plan(w.s, t0)
	require.NoError(t, err)
	require.Empty(t, pl.Groups, "a fresh handover waits for the release")
	require.Equal(t, t0.Add(30*time.Second), pl.NextDeadline)

	pl, err = p.Plan(w.s, t0.Add(29*time.Second))
	require.NoError(t, err)
	require.Empty(t, pl.Groups)

	pl, err = p.Plan(w.s, t0.Add(30*time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{"delete f00 a->b", "assign f00 b->"}, actions(pl))
	require.Equal(t, ReasonHandoverTimeout, pl.Groups[0].Actions[0].Reason)
}

func TestUnreportedFileIsRevokedToNobody(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.heartbeat("web", "a", "f00", "f01")
	p := newPlanner(t, time.Minute)
	converge(t, w, p, time.Now())
	w.heartbeat("web", "a", "f00") // f01 rotated away and finished
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Equal(t, []string{"revoke f01 a->"}, actions(pl))
	require.Equal(t, ReasonUnreported, pl.Groups[0].Actions[0].Reason)
	var v protocol.Assignment
	require.NoError(t, protocol.Unmarshal("test", pl.Groups[0].Ops[0].ValueBytes(), &v))
	require.Equal(t, protocol.StateRevoking, v.State)
	require.Empty(t, v.Revoking)
	w.apply(pl)
	require.Equal(t, 1, w.release())
	pl, err = p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Empty(t, pl.Groups, "a released file nobody reports stays unassigned")
}

func TestBadInputFreezesOnlyItsTopic(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.topic("api", sharedCfg)
	w.heartbeat("web", "a", "f00", "f01")
	w.heartbeat("api", "a", "g00")
	p := newPlanner(t, time.Minute)
	converge(t, w, p, time.Now())

	w.topic("web", `{"paths":["relative/*.log"],"shared":true}`)
	w.del(ks.Heartbeat("web", "a")) // would normally delete a's keys
	w.heartbeat("api", "b", "g00", "g01")
	w.put("/topics/api/a/b", []byte("x"))   // junk: too deep
	w.put("/topics/bad name", []byte("{}")) // junk: bad topic name
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	for _, g := range pl.Groups {
		require.Equal(t, "api", g.Topic, "the invalid topic is frozen")
	}
	require.Equal(t, []string{"assign g01 b->"}, actions(pl))
	var web protocol.TopicStatus
	for _, st := range pl.Topics {
		if st.Topic == "web" {
			web = st
		}
	}
	require.Equal(t, protocol.TopicInvalid, web.State)
	require.Contains(t, web.Error, "paths[0]")
	require.Equal(t, 1, pl.InvalidTopics)
	var junk []string
	for _, j := range pl.Junk {
		junk = append(junk, j.Key)
	}
	require.Equal(t, []string{"/topics/api/a/b", "/topics/bad name"}, junk)

	// Fixing the config unfreezes it: the dead owner's keys go.
	w.topic("web", sharedCfg)
	pl, err = p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"delete f00 a->", "delete f01 a->", "assign g01 b->"}, actions(pl))
}

func TestPausedAndRemovedTopics(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.heartbeat("web", "a", "f00")
	p := newPlanner(t, time.Minute)
	converge(t, w, p, time.Now())

	w.topic("web", `{"paths":["/shared/*.log"],"shared":true,"paused":true}`)
	w.heartbeat("web", "b", "f00")
	w.del(ks.Heartbeat("web", "a"))
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Empty(t, pl.Groups, "a paused topic keeps its assignments")
	require.Equal(t, protocol.TopicPaused, pl.Topics[0].State)

	w.heartbeat("web", "a", "f00")
	w.del(ks.Topic("web"))
	pl, err = p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Equal(t, []string{"revoke f00 a->"}, actions(pl))
	require.Equal(t, ReasonTopicRemoved, pl.Groups[0].Actions[0].Reason)
	require.Equal(t, protocol.TopicUnconfigured, pl.Topics[0].State)
}

func TestUndecodableHeartbeatFreezesItsFiles(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	fs := files(4)
	w.heartbeat("web", "a", fs...)
	w.heartbeat("web", "b", fs...)
	p := newPlanner(t, time.Minute)
	converge(t, w, p, time.Now())
	before := w.holders("web")
	w.put(ks.Heartbeat("web", "a"), []byte(`{"v":1,"agent":"a","files":"nope"}`))
	w.heartbeat("web", "c", fs...)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	for _, g := range pl.Groups {
		require.NotEqual(t, []string{"a"}, before[g.File], "a's files are frozen: %v", actions(pl))
	}
	reason, ok := w.s.JunkReason(ks.Heartbeat("web", "a"))
	require.True(t, ok)
	require.Contains(t, reason, "decode")
	require.True(t, slices.ContainsFunc(pl.Topics[0].Problems, func(s string) bool { return strings.Contains(s, "agent a") }))
}

func TestDuplicateKeysKeepOneOwner(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.heartbeat("web", "a", "f00")
	w.heartbeat("web", "b", "f00")
	w.assignment("web", "a", "f00", protocol.StateActive, "") // older
	w.assignment("web", "b", "f00", protocol.StateActive, "") // an operator's copy
	p := newPlanner(t, time.Minute)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Equal(t, []string{"revoke f00 b->"}, actions(pl))
	require.Equal(t, ReasonDuplicate, pl.Groups[0].Actions[0].Reason)
	require.True(t, slices.ContainsFunc(pl.Topics[0].Problems, func(s string) bool { return strings.Contains(s, "2 assignment keys") }))
}

func TestGroupsFitATxn(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.heartbeat("web", "a", "f00")
	for i := range 100 {
		w.assignment("web", fmt.Sprintf("dead%03d", i), "f00", protocol.StateActive, "")
	}
	p := newPlanner(t, time.Minute)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Len(t, pl.Groups, 1)
	require.LessOrEqual(t, len(pl.Groups[0].Ops), MaxGroupOps)
	require.LessOrEqual(t, len(pl.Groups[0].Cmps)+1, 128)
	require.Equal(t, Delete, pl.Groups[0].Actions[0].Kind)
	w.apply(pl)
	pl, err = p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Len(t, pl.Groups, 1)
	require.Equal(t, Assign, pl.Groups[0].Actions[len(pl.Groups[0].Actions)-1].Kind,
		"the rest go with the new owner's key in one group")
	w.apply(pl)
	require.Equal(t, map[string][]string{"f00": {"a"}}, w.holders("web"))
}

func TestStatusJSONRoundTrips(t *testing.T) {
	w := newWorld(t)
	w.topic("web", sharedCfg)
	w.heartbeat("web", "a", "f00")
	p := newPlanner(t, time.Minute)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	raw, err := protocol.Marshal(&pl.Topics[0])
	require.NoError(t, err)
	var back protocol.TopicStatus
	require.NoError(t, protocol.Unmarshal("status", raw, &back))
	require.Equal(t, pl.Topics[0].Files, back.Files)
	require.True(t, json.Valid(raw))
}

// MaxGroups bounds what one pass plans; the passes its writes wake plan
// the rest, a topic left out entirely included, and the result is the
// unbounded one.
func TestMaxGroupsSpreadsAPassOverSeveral(t *testing.T) {
	build := func() *world {
		w := newWorld(t)
		w.topic("a-local", `{"paths":["/shared/*.log"]}`)
		w.heartbeat("a-local", "x", "l0", "l1", "l2")
		w.topic("b-web", sharedCfg)
		for _, a := range []string{"x", "y"} {
			w.heartbeat("b-web", a, "s0", "s1", "s2", "s3")
		}
		return w
	}
	want := build()
	converge(t, want, newPlanner(t, time.Minute), time.Now())

	w := build()
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, MaxGroups: 3})
	require.NoError(t, err)
	var groups, capped []int
	for range 10 {
		pl, err := p.Plan(w.s, time.Now())
		require.NoError(t, err)
		if len(pl.Groups) == 0 {
			require.Zero(t, pl.Capped)
			break
		}
		groups, capped = append(groups, len(pl.Groups)), append(capped, pl.Capped)
		w.apply(pl)
	}
	require.Equal(t, []int{3, 3, 1}, groups, "groups per pass")
	require.Equal(t, []int{4, 1, 0}, capped, "files left for later passes")
	require.Equal(t, want.holders("a-local"), w.holders("a-local"))
	require.Equal(t, want.holders("b-web"), w.holders("b-web"))

	_, err = NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, MaxGroups: -1})
	require.ErrorIs(t, err, ErrOptions)
}

// A local topic never consults a consistent ring, so none is built or
// asked for, however many members it has.
func TestLocalTopicBuildsNoRing(t *testing.T) {
	w := newWorld(t)
	w.topic("app", `{"paths":["/shared/*.log"]}`)
	for i := range 300 {
		w.heartbeat("app", fmt.Sprintf("agent-%03d", i), fmt.Sprintf("f%03d", i))
	}
	p, err := NewPlanner(ks, Options{Leader: "L", HandoverTimeout: time.Minute, AsyncRings: true})
	require.NoError(t, err)
	pl, err := p.Plan(w.s, time.Now())
	require.NoError(t, err)
	require.Len(t, pl.Groups, 300)
	require.Empty(t, pl.Rings, "no ring work for a local topic")
	require.Empty(t, pl.RingSyncs, "no ring work for a local topic")
}
