package plan

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/assign"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
)

// ErrOptions is wrapped by NewPlanner's errors.
var ErrOptions = errors.New("plan: invalid options")

// Planner plans, keeping between passes only what makes plans stable and
// timeouts measurable: each topic's assign.Assigner (a ring cache), when
// each revoking key was first seen, and the intended next owner of files
// being handed over.
//
// A Planner may outlive a leadership term: Reset forgets what only one term
// may rely on and keeps the assigners, whose rings are expensive to build.
type Planner struct {
	ks  keyspace.Space
	opt Options

	amu       sync.Mutex // guards assigners (Rings may run beside a term's plans)
	assigners map[string]*assign.Assigner
	revoking  map[string]revokeMemo         // assignment key -> when first seen revoking
	next      map[string]map[string]handoff // topic -> file -> handover under way

	// quiet remembers topics whose last plan did nothing and waits for
	// nothing, to skip them while they do not change (see Plan).
	quiet map[string]quietMemo
	ring  map[string][]string // this pass: each shared topic's ring members
	room  int                 // this pass: groups it may still plan (MaxGroups), < 0 without a bound

	// Damping of owner_gone (OwnerGoneRate).
	gone      map[goneUnit]goneMemo
	goneTopic map[string]bool   // this pass: topics with gone owners
	allowGone map[goneUnit]bool // this pass
	tokens    float64
	refilled  time.Time
}

// goneUnit is one agent's assignments in one topic while its heartbeat
// for the topic is gone.
type goneUnit struct{ topic, agent string }

type quietMemo struct {
	t           *Topic
	gen         uint64
	st          protocol.TopicStatus
	assignments int
	ring        []string
}

type goneMemo struct {
	since    time.Time
	deferred bool
}

type revokeMemo struct {
	createRev int64
	since     time.Time
}

type handoff struct {
	to      string // the next owner
	fromKey string // the key being released
}

// NewPlanner validates opt.
func NewPlanner(ks keyspace.Space, opt Options) (*Planner, error) {
	if opt.Leader == "" {
		return nil, fmt.Errorf("%w: empty leader id", ErrOptions)
	}
	if opt.HandoverTimeout <= 0 {
		return nil, fmt.Errorf("%w: handover timeout %v must be positive", ErrOptions, opt.HandoverTimeout)
	}
	if err := opt.Assign.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if opt.MaxGroups < 0 {
		return nil, fmt.Errorf("%w: max groups %d must be 0 (no bound) or positive", ErrOptions, opt.MaxGroups)
	}
	if opt.OwnerGoneGrace < 0 {
		return nil, fmt.Errorf("%w: owner-gone grace %v must be 0 (none) or positive", ErrOptions, opt.OwnerGoneGrace)
	}
	if math.IsNaN(opt.OwnerGoneRate) || opt.OwnerGoneRate < 0 {
		return nil, fmt.Errorf("%w: owner-gone rate %v must be 0 (no bound) or positive", ErrOptions, opt.OwnerGoneRate)
	}
	p := &Planner{ks: ks, opt: opt, assigners: map[string]*assign.Assigner{}}
	p.Reset()
	return p, nil
}

// Reset forgets everything but the assigners: handover clocks, handovers
// under way and the owner_gone budget. Call it at the start of a term: a
// term trusts only what it reads itself.
func (p *Planner) Reset() {
	p.revoking = map[string]revokeMemo{}
	p.next = map[string]map[string]handoff{}
	p.gone = map[goneUnit]goneMemo{}
	p.quiet = map[string]quietMemo{}
	p.tokens, p.refilled = p.opt.OwnerGoneRate, time.Time{}
}

// Plan computes the operations that move s one step towards the desired
// assignment, and the status of every topic, at time now.
func (p *Planner) Plan(s *State, now time.Time) (*Plan, error) {
	out := &Plan{Junk: s.Junk()}
	seenRevoking := map[string]bool{}
	agents := map[string]bool{}
	p.dampGone(s, now, out)
	var shared []Group
	p.ring = map[string][]string{}
	p.room = -1
	if p.opt.MaxGroups > 0 {
		p.room = p.opt.MaxGroups
	}
	for _, name := range s.TopicNames() {
		t := s.topics[name]
		for a, m := range t.Members {
			if m.Err == nil {
				agents[a] = true
			}
		}
		if q, ok := p.quiet[name]; ok && p.stillQuiet(t, q) {
			// Planned before at this gen, to no effect, waiting for
			// nothing: the same inputs give the same (empty) plan. At a
			// million files a topic's pass takes seconds.
			st := q.st
			st.Checkpoints = len(t.Offsets)
			out.Topics = append(out.Topics, st)
			out.Files += st.Files
			out.Assignments += q.assignments
			if st.State == protocol.TopicInvalid {
				out.InvalidTopics++
			}
			out.Skipped++
			continue
		}
		n, ns, capped := len(out.Groups), len(shared), out.Capped
		st, err := p.planTopic(t, now, out, seenRevoking)
		if err != nil {
			return nil, err
		}
		if st.Shared {
			// Local topics' groups go first: their writes never wait
			// behind a shared topic's.
			shared = append(shared, out.Groups[n:]...)
			out.Groups = out.Groups[:n]
		}
		out.Topics = append(out.Topics, st)
		out.Files += st.Files
		out.Pending += st.Pending
		assignments := 0
		for _, hs := range t.Assigns {
			assignments += hs.Len()
		}
		out.Assignments += assignments
		if st.State == protocol.TopicInvalid {
			out.InvalidTopics++
		}
		if len(out.Groups) == n && len(shared) == ns && out.Capped == capped && st.Pending == 0 && len(p.next[name]) == 0 && !p.goneTopic[name] {
			p.quiet[name] = quietMemo{t: t, gen: t.gen, st: st, assignments: assignments, ring: p.ring[name]}
		} else {
			delete(p.quiet, name)
		}
	}
	out.Groups = append(out.Groups, shared...)
	out.Members = len(agents)
	for k := range p.revoking {
		if !seenRevoking[k] {
			delete(p.revoking, k)
		}
	}
	p.pruneAssigners(s)
	for name := range p.quiet {
		if s.topics[name] == nil {
			delete(p.quiet, name)
		}
	}
	for name := range p.next {
		if s.topics[name] == nil {
			delete(p.next, name)
		}
	}
	return out, nil
}

// stillQuiet reports whether t may be skipped: unchanged since a plan that
// did nothing, no owner gone, and its ring (if any) as it was then.
func (p *Planner) stillQuiet(t *Topic, q quietMemo) bool {
	if q.t != t || q.gen != t.gen || p.goneTopic[t.Name] {
		return false
	}
	if q.ring == nil {
		return true
	}
	p.amu.Lock()
	a := p.assigners[t.Name]
	p.amu.Unlock()
	return a != nil && a.InSync(q.ring)
}

// pruneAssigners drops the rings of topics that have no config any more.
func (p *Planner) pruneAssigners(s *State) {
	p.amu.Lock()
	defer p.amu.Unlock()
	for name := range p.assigners {
		if t := s.topics[name]; t == nil || t.Config == nil {
			delete(p.assigners, name)
		}
	}
}

func (p *Planner) assigner(topic string) (*assign.Assigner, error) {
	p.amu.Lock()
	defer p.amu.Unlock()
	a := p.assigners[topic]
	if a == nil {
		var err error
		if a, err = assign.NewAssigner(p.opt.Assign); err != nil {
			return nil, err
		}
		p.assigners[topic] = a
	}
	return a, nil
}

// revokeSince returns when key a was first seen revoking (now if just now).
func (p *Planner) revokeSince(t *Topic, a *Assignment, now time.Time, seen map[string]bool) time.Time {
	key := t.Key(a)
	seen[key] = true
	m, ok := p.revoking[key]
	if !ok || m.createRev != a.CreateRev {
		m = revokeMemo{createRev: a.CreateRev, since: now}
		p.revoking[key] = m
	}
	return m.since
}

func (p *Planner) planTopic(t *Topic, now time.Time, out *Plan, seenRevoking map[string]bool) (protocol.TopicStatus, error) {
	st := report(t)
	switch {
	case t.Config == nil:
		st.State = protocol.TopicUnconfigured
	case t.Config.Err != nil:
		st.State = protocol.TopicInvalid
		st.Error = t.Config.Err.Error()
	case t.Config.Config.Paused:
		st.State = protocol.TopicPaused
	default:
		st.State = protocol.TopicOK
		st.Shared = t.Config.Config.Shared
	}
	if st.State == protocol.TopicInvalid || st.State == protocol.TopicPaused {
		// Frozen: keep every assignment as it is. Keep the handover clocks
		// running so that a fix does not restart them.
		for _, hs := range t.Assigns {
			for a := range hs.All() {
				if a.Revoking() {
					p.revokeSince(t, a, now, seenRevoking)
				}
			}
		}
		return st, nil
	}

	// Files held by an agent whose heartbeat does not decode are frozen:
	// what that agent sees is unknown, so they are neither moved nor given
	// to anyone else.
	frozen := map[string]bool{}
	for f, hs := range t.Assigns {
		for a := range hs.All() {
			if m := t.Members[a.Agent]; m != nil && m.Err != nil {
				frozen[f] = true
			}
		}
	}
	next := p.next[t.Name]
	if next == nil {
		next = map[string]handoff{}
		p.next[t.Name] = next
	}

	var desired *assign.Result // nil: nobody should hold anything
	if st.State == protocol.TopicOK {
		// The current assignment is read from t.Assigns as assign asks,
		// not copied into a map of every file (about 70 MB a pass at a
		// million files). After a release and before the new owner's key
		// is written, the file is the next owner's: the plan does not
		// change its mind.
		current := func(f string) string {
			if frozen[f] {
				return ""
			}
			if hs, held := t.Assigns[f]; held {
				return currentHolder(t, hs)
			}
			return next[f].to
		}
		in := assign.Input{Shared: st.Shared, Sees: make(map[string][]string, len(t.Members)), CurrentOf: current}
		for agent, m := range t.Members {
			if m.Err != nil {
				continue
			}
			in.Members = append(in.Members, agent)
			keys := m.Keys
			if len(frozen) > 0 {
				keys = slices.DeleteFunc(slices.Clone(keys), func(f string) bool { return frozen[f] })
			}
			in.Sees[agent] = keys
		}
		a, err := p.assigner(t.Name)
		if err != nil {
			return st, err
		}
		switch {
		case !st.Shared:
			// A local topic's files go to the member that sees them: no
			// ring is consulted, so none is built (a cold one of 10,000
			// members took minutes of a core, starving etcd beside it).
			desired, err = a.ComputeNowResult(in)
		case p.opt.AsyncRings:
			members := assign.RingMembers(in)
			p.ring[t.Name] = members
			if st, ok := a.TrySync(members, inlineRingWork); !ok {
				out.Rings = append(out.Rings, RingWork{Topic: t.Name, Assigner: a, Members: members})
			} else if st.Added+st.Removed > 0 {
				out.RingSyncs = append(out.RingSyncs, RingSynced{Topic: t.Name, Members: len(members), Stats: st})
			}
			desired, err = a.ComputeNowResult(in)
		default:
			desired, err = a.ComputeResult(in)
		}
		if err != nil {
			st.Problems = appendProblem(st.Problems, fmt.Sprintf("assignment not computed: %v", err))
			return st, nil
		}
	}

	for f := range next {
		_, want := desired.Owner(f)
		if _, held := t.Assigns[f]; !want && !held {
			delete(next, f)
		}
	}
	// Every file wanted or held, each once, in no particular order: the
	// groups are sorted at the end (sorting a million file keys on every
	// pass cost a second; the groups are usually few).
	n := len(out.Groups)
	visit := func(f, want string) {
		if frozen[f] || p.room == 0 {
			// Left as it is; a handover's clock keeps running. A pass
			// that is full (MaxGroups) counts what it leaves: the writes
			// it made wake the next pass, which plans the rest.
			if p.room == 0 && p.wouldChange(t, f, want) {
				out.Capped++
			}
			for a := range t.Assigns[f].All() {
				if a.Revoking() {
					p.revokeSince(t, a, now, seenRevoking)
				}
			}
			return
		}
		g, deadline := p.planFile(t, f, want, st.State, now, seenRevoking)
		if !deadline.IsZero() && (out.NextDeadline.IsZero() || deadline.Before(out.NextDeadline)) {
			out.NextDeadline = deadline
		}
		if len(g.Ops) > 0 {
			out.Groups = append(out.Groups, g)
			if p.room > 0 {
				p.room--
			}
		}
	}
	for f, want := range desired.All() {
		visit(f, want)
	}
	for f := range t.Assigns {
		if _, ok := desired.Owner(f); !ok {
			visit(f, "")
		}
	}
	slices.SortFunc(out.Groups[n:], func(a, b Group) int { return strings.Compare(a.File, b.File) })
	if len(next) == 0 {
		delete(p.next, t.Name)
	}
	return st, nil
}

// wouldChange reports, cheaply, whether planFile would do something for f
// (it may answer true for a file waiting on a handover): f is not held by
// exactly its desired owner with an active key.
func (p *Planner) wouldChange(t *Topic, f, want string) bool {
	hs := t.Assigns[f]
	return hs.head == nil || hs.head.next != nil || hs.head.Agent != want || hs.head.Revoking() || t.Members[want] == nil
}

// currentHolder is the member that counts as holding f for assign's
// Current input: the agent of its active key (the oldest, if an error left
// two), else the next owner of a handover under way.
func currentHolder(t *Topic, hs Holders) string {
	var best *Assignment
	for a := range hs.All() {
		if m := t.Members[a.Agent]; m == nil || m.Err != nil || a.Revoking() {
			continue
		}
		if best == nil || a.CreateRev < best.CreateRev {
			best = a
		}
	}
	if best != nil {
		return best.Agent
	}
	for a := range hs.All() {
		if a.Revoking() && a.Next != "" {
			return a.Next
		}
	}
	return ""
}

// planFile plans one file whose desired owner is want ("" for nobody).
// It returns the file's group and, while a handover waits, its deadline.
func (p *Planner) planFile(t *Topic, f, want, state string, now time.Time, seenRevoking map[string]bool) (Group, time.Time) {
	g := Group{Topic: t.Name, File: f}
	keys := t.Assigns[f]
	var deadline time.Time
	holder := ""
	inflight := false
	deleted := map[string]bool{}
	next := p.next[t.Name]

	remove := func(a *Assignment, reason string) {
		key := t.Key(a)
		g.Cmps = append(g.Cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", a.CreateRev))
		g.Ops = append(g.Ops, clientv3.OpDelete(key))
		g.Actions = append(g.Actions, Action{Kind: Delete, Key: key, Agent: a.Agent, Reason: reason, To: want})
		deleted[key] = true
	}
	for a := range keys.All() {
		if len(g.Ops) >= MaxGroupOps {
			return g, deadline
		}
		m := t.Members[a.Agent]
		switch {
		case m == nil && !p.goneAllowed(t.Name, a.Agent):
			// Damped (OwnerGoneRate): left in place for now, and nobody
			// else gets the file while the key exists.
			inflight = true
		case m == nil:
			// A dead agent cannot release: delete its key now.
			remove(a, ReasonOwnerGone)
		case a.Revoking():
			if a.Next != "" {
				next[f] = handoff{to: a.Next, fromKey: t.Key(a)}
			}
			since := p.revokeSince(t, a, now, seenRevoking)
			if end := since.Add(p.opt.HandoverTimeout); !now.Before(end) {
				remove(a, ReasonHandoverTimeout)
			} else {
				inflight = true
				deadline = minTime(deadline, end)
			}
		case a.Agent == want && holder == "":
			holder = want
		}
	}
	if holder != "" {
		delete(next, f)
	}
	revoked := false
	for a := range keys.All() {
		m := t.Members[a.Agent]
		if m == nil || a.Revoking() || a.Agent == holder {
			continue
		}
		if len(g.Ops) >= MaxGroupOps {
			return g, deadline
		}
		to, reason := want, ReasonRebalance
		path, sees := m.Path(f)
		switch {
		case state == protocol.TopicUnconfigured:
			reason = ReasonTopicRemoved
		case holder != "":
			to, reason = "", ReasonDuplicate
		case !sees || want == "":
			reason = ReasonUnreported
		}
		v := protocol.Assignment{State: protocol.StateRevoking, Path: a.Path, Leader: p.opt.Leader, Revoking: to}
		if a.Bad {
			v.Path = path
		}
		key := t.Key(a)
		raw, err := protocol.Marshal(&v)
		if err != nil {
			panic(fmt.Sprintf("marshal assignment %s: %v", key, err)) // a struct of strings always marshals
		}
		// Guarded by the key's create revision: if the agent released the
		// key meanwhile, this Put must not bring it back.
		g.Cmps = append(g.Cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", a.CreateRev))
		g.Ops = append(g.Ops, clientv3.OpPut(key, string(raw)))
		g.Actions = append(g.Actions, Action{Kind: Revoke, Key: key, Agent: a.Agent, Reason: reason, To: to})
		p.revoking[key] = revokeMemo{createRev: a.CreateRev, since: now}
		seenRevoking[key] = true
		if to != "" {
			next[f] = handoff{to: to, fromKey: key}
		}
		deadline = minTime(deadline, now.Add(p.opt.HandoverTimeout))
		revoked = true
	}
	if holder != "" || want == "" || inflight || revoked {
		return g, deadline
	}
	// Every other key of f is deleted by this group (or there was none):
	// the new owner's key can be written in the same Txn.
	key := p.ks.Assign(want, t.Name, f)
	if deleted[key] {
		// The new owner's own stale key goes first; it is written again
		// on the next pass, once the deletion is seen.
		return g, deadline
	}
	g.Cmps = append(g.Cmps, clientv3.Compare(clientv3.CreateRevision(key), "=", 0))
	if h, ok := next[f]; ok && h.fromKey != key && !deleted[h.fromKey] {
		// The release this assignment relies on must still hold.
		g.Cmps = append(g.Cmps, clientv3.Compare(clientv3.CreateRevision(h.fromKey), "=", 0))
	}
	path, _ := t.Members[want].Path(f)
	v := protocol.Assignment{State: protocol.StateActive, Path: path, Leader: p.opt.Leader}
	raw, err := protocol.Marshal(&v)
	if err != nil {
		panic(fmt.Sprintf("marshal assignment %s: %v", key, err))
	}
	g.Ops = append(g.Ops, clientv3.OpPut(key, string(raw)))
	g.Actions = append(g.Actions, Action{Kind: Assign, Key: key, Agent: want})
	return g, deadline
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
