package plan

import (
	"fmt"
	"iter"
	"maps"
	"slices"
	"strings"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// State is the leader's parsed picture of /topics/, /assign/ and
// /offsets/. It is fed with mirror events and is not safe for concurrent
// use: the coordinator serialises Apply and Plan.
type State struct {
	ks     keyspace.Space
	topics map[string]*Topic
	junk   map[string]string // key -> why it is ignored
	rev    int64
	gen    uint64 // last Topic.gen given; never reset, so gens are never reused
}

// Topic is everything known about one topic directory P.
type Topic struct {
	Name string
	// Config is nil while /topics/<P> does not exist.
	Config *TopicConfig
	// Members are the heartbeat keys /topics/<P>/<agent>, by agent.
	Members map[string]*Member
	// Assigns are the keys /assign/<agent>/<P>/<file>, by file.
	Assigns map[string]Holders
	ks      *keyspace.Space // for Topic.Key
	// Offsets are the files with a checkpoint /offsets/<P>/<file>.
	Offsets map[string]struct{}

	// gen changes with every change that can change a plan of the topic
	// (not checkpoints): the Planner skips a topic it planned at the same
	// gen to no effect.
	gen uint64
}

// TopicConfig is the decoded /topics/<P>, or why it does not decode.
type TopicConfig struct {
	Config topics.Config
	Err    error
	ModRev int64
}

// Member is one agent's heartbeat for a topic.
type Member struct {
	Agent  string
	Lease  int64
	ModRev int64
	// Err is set when the value does not decode; the agent is alive (its
	// key exists) but what it sees is unknown.
	Err error
	// Keys are the valid file keys the agent reports, sorted and distinct
	// (assign's Sees input); Paths their paths there, in the same order.
	// Two slices rather than a map: at a million files the map's overhead
	// alone was about 50 bytes a file.
	Keys, Paths []string
	// Truncated is the heartbeat's count of files left out for size.
	Truncated int
	// Bad lists reported file keys that break the naming rules (ignored).
	Bad []string
}

// Assignment is one key /assign/<agent>/<P>/<file>, with what planning
// needs of its value (not the leader that wrote it, not its version).
//
// The key itself is not kept (Key builds it): at a million files its string
// was about 80 bytes a file, and Agent, File and Path are copies shared
// with the agent's heartbeat, not slices of the key. There is one per file,
// so every field counts: the struct is 96 bytes (it was 160 with a key
// space, the topic's name, the mod revision, an error of its own and the
// whole decoded value).
type Assignment struct {
	Agent, File string
	// Path is the value's path; Next its revoking field: the agent the
	// file goes to next, while revoking.
	Path, Next string
	CreateRev  int64
	// next is the file's next holder, in agent order (see Holders).
	next *Assignment
	// revoking is the value's state: revoking, or active.
	revoking bool
	// Bad is set when the value does not decode or has an unknown state
	// (the reason is in the State's junk list); such a key counts as an
	// active assignment (the agent may be shipping the file).
	Bad bool
}

// Key is the etcd key of a, one of t's assignments.
func (t *Topic) Key(a *Assignment) string { return t.ks.Assign(a.Agent, t.Name, a.File) }

// Path returns the path the agent reports for file f, and whether it
// reports f at all.
func (m *Member) Path(f string) (string, bool) {
	i, ok := slices.BinarySearch(m.Keys, f)
	if !ok {
		return "", false
	}
	return m.Paths[i], true
}

// Holders are the assignment keys of one file, in agent order: almost
// always one. They are a chain through Assignment.next, so that the map of
// a topic's files holds one pointer a file: a slice there cost 24 bytes
// more a file in the map and an array of its own, a map per file about
// 250 bytes.
type Holders struct{ head *Assignment }

// Len is the number of keys.
func (h Holders) Len() int {
	n := 0
	for a := h.head; a != nil; a = a.next {
		n++
	}
	return n
}

// All yields the keys in agent order.
func (h Holders) All() iter.Seq[*Assignment] {
	return func(yield func(*Assignment) bool) {
		for a := h.head; a != nil; a = a.next {
			if !yield(a) {
				return
			}
		}
	}
}

// get returns the key of agent, or nil.
func (h Holders) get(agent string) *Assignment {
	for a := h.head; a != nil; a = a.next {
		if a.Agent == agent {
			return a
		}
	}
	return nil
}

// with returns h with a in place of agent's key, or added in order.
func (h Holders) with(a *Assignment) Holders {
	link := &h.head
	for *link != nil && (*link).Agent < a.Agent {
		link = &(*link).next
	}
	a.next = *link
	if a.next != nil && a.next.Agent == a.Agent {
		a.next = a.next.next // replaces it
	}
	*link = a
	return h
}

// without returns h without agent's key.
func (h Holders) without(agent string) Holders {
	for link := &h.head; *link != nil; link = &(*link).next {
		if (*link).Agent == agent {
			*link = (*link).next
			break
		}
	}
	return h
}

// agents returns the holders' agents, in order.
func (h Holders) agents() []string {
	var out []string
	for a := range h.All() {
		out = append(out, a.Agent)
	}
	return out
}

// Revoking reports whether the key is marked for handover.
func (a *Assignment) Revoking() bool { return !a.Bad && a.revoking }

// NewState returns an empty State for key space ks.
func NewState(ks keyspace.Space) *State {
	return &State{ks: ks, topics: map[string]*Topic{}, junk: map[string]string{}}
}

// Reset empties the state, before a full snapshot is applied.
func (s *State) Reset() {
	s.topics = map[string]*Topic{}
	s.junk = map[string]string{}
	s.rev = 0
}

// Revision is the highest mirror revision applied.
func (s *State) Revision() int64 { return s.rev }

// SetRevision records the mirror revision of the last batch applied.
func (s *State) SetRevision(rev int64) { s.rev = max(s.rev, rev) }

// Topic returns topic P, or nil.
func (s *State) Topic(p string) *Topic { return s.topics[p] }

// TopicNames returns every topic name known, sorted.
func (s *State) TopicNames() []string { return slices.Sorted(maps.Keys(s.topics)) }

// Junk returns every ignored key with the reason, sorted by key.
func (s *State) Junk() []protocol.JunkKey {
	out := make([]protocol.JunkKey, 0, len(s.junk))
	for _, k := range slices.Sorted(maps.Keys(s.junk)) {
		out = append(out, protocol.JunkKey{Key: k, Error: s.junk[k]})
	}
	return out
}

// JunkReason returns why key is ignored, if it is.
func (s *State) JunkReason(key string) (string, bool) {
	r, ok := s.junk[key]
	return r, ok
}

// AssignKV returns the assignment stored under key, if any.
func (s *State) AssignKV(key string) (*Assignment, bool) {
	k, err := s.ks.Parse(key)
	if err != nil || k.Kind != keyspace.KindAssign {
		return nil, false
	}
	t := s.topics[k.Topic]
	if t == nil {
		return nil, false
	}
	a := t.Assigns[k.File].get(k.Agent)
	return a, a != nil
}

func (s *State) topic(p string) *Topic {
	t := s.topics[p]
	if t == nil {
		t = &Topic{Name: p, Members: map[string]*Member{}, Assigns: map[string]Holders{}, Offsets: map[string]struct{}{}, ks: &s.ks}
		s.topics[p] = t
	}
	return t
}

func (s *State) dropIfEmpty(t *Topic) {
	if t.Config == nil && len(t.Members) == 0 && len(t.Assigns) == 0 && len(t.Offsets) == 0 {
		delete(s.topics, t.Name)
	}
}

// Apply applies one mirror event. It reports whether the event can change
// a plan: checkpoints only feed status counts, and agents write them every
// second or so, so they must not wake the reconciler.
func (s *State) Apply(ev mirror.Event) bool {
	key := ev.KV.Key
	delete(s.junk, key)
	k, err := s.ks.Parse(key)
	if err != nil {
		if ev.Type == mirror.Put {
			s.junk[key] = err.Error()
		}
		return true
	}
	if k.Kind == keyspace.KindTopic || k.Kind == keyspace.KindHeartbeat || k.Kind == keyspace.KindAssign {
		s.gen++
		s.topic(k.Topic).gen = s.gen
	}
	switch k.Kind {
	case keyspace.KindTopic:
		t := s.topic(k.Topic)
		if ev.Type == mirror.Delete {
			t.Config = nil
			s.dropIfEmpty(t)
			return true
		}
		cfg, err := topics.Decode(k.Topic, ev.KV.Value)
		t.Config = &TopicConfig{Config: cfg, Err: err, ModRev: ev.KV.ModRevision}
		return true
	case keyspace.KindHeartbeat:
		t := s.topic(k.Topic)
		if ev.Type == mirror.Delete {
			delete(t.Members, k.Agent)
			s.dropIfEmpty(t)
			return true
		}
		agent := k.Agent
		if old := t.Members[agent]; old != nil {
			agent = old.Agent // the copy assignments share
		} else {
			agent = strings.Clone(agent)
		}
		m := decodeHeartbeat(key, agent, ev.KV)
		if m.Err != nil {
			s.junk[key] = m.Err.Error()
		}
		t.Members[k.Agent] = m
		// The agent's assignments name the same paths: keep one copy.
		for i, f := range m.Keys {
			if a := t.Assigns[f].get(k.Agent); a != nil && a.Path == m.Paths[i] {
				a.Path = m.Paths[i]
			}
		}
		return true
	case keyspace.KindAssign:
		t := s.topic(k.Topic)
		if ev.Type == mirror.Delete {
			if hs := t.Assigns[k.File].without(k.Agent); hs.head != nil {
				t.Assigns[k.File] = hs
			} else {
				delete(t.Assigns, k.File)
			}
			s.dropIfEmpty(t)
			return true
		}
		a := &Assignment{Agent: k.Agent, File: k.File, CreateRev: ev.KV.CreateRevision}
		var v protocol.Assignment
		if err := protocol.Unmarshal(key, ev.KV.Value, &v); err != nil {
			a.Bad = true
			s.junk[key] = err.Error()
		} else if v.State != protocol.StateActive && v.State != protocol.StateRevoking {
			a.Bad = true
			s.junk[key] = fmt.Sprintf("assignment %s: unknown state %q", key, v.State)
		}
		a.Path, a.Next, a.revoking = v.Path, v.Revoking, v.State == protocol.StateRevoking
		// Share the strings the agent's heartbeat holds (the coordinator
		// lists /topics/ before /assign/, so it is there), and never keep
		// a slice of the key, which would keep all of the key alive.
		a.File = ""
		if m := t.Members[k.Agent]; m == nil {
			a.Agent = strings.Clone(k.Agent)
		} else {
			a.Agent = m.Agent
			if i, ok := slices.BinarySearch(m.Keys, k.File); ok {
				a.File = m.Keys[i]
				if m.Paths[i] == a.Path {
					a.Path = m.Paths[i]
				}
			}
		}
		if hs, ok := t.Assigns[k.File]; ok {
			a.File = hs.head.File
			t.Assigns[k.File] = hs.with(a)
			return true
		}
		if a.File == "" {
			a.File = strings.Clone(k.File)
		}
		t.Assigns[a.File] = Holders{head: a}
		return true
	case keyspace.KindOffset:
		t := s.topic(k.Topic)
		if ev.Type == mirror.Delete {
			delete(t.Offsets, k.File)
			s.dropIfEmpty(t)
		} else if _, ok := t.Offsets[k.File]; !ok {
			// Keyed by a copy of the file key that is kept anyway (the
			// assignment's), not by a slice of this key, which would keep
			// all of it alive: about 50 bytes a file.
			f := strings.Clone(k.File)
			if hs := t.Assigns[k.File]; hs.head != nil {
				f = hs.head.File
			}
			t.Offsets[f] = struct{}{}
		}
		return false
	}
	// A key of another family under a watched prefix cannot happen with
	// the prefixes the coordinator watches; report it rather than guess.
	if ev.Type == mirror.Put {
		s.junk[key] = fmt.Sprintf("unexpected %v key under a watched prefix", k.Kind)
	}
	return true
}

func decodeHeartbeat(key, agent string, kv mirror.KV) *Member {
	m := &Member{Agent: agent, Lease: kv.Lease, ModRev: kv.ModRevision}
	var hb protocol.Heartbeat
	if err := protocol.Unmarshal(key, kv.Value, &hb); err != nil {
		m.Err = err
		return m
	}
	if hb.Agent != "" && hb.Agent != agent {
		m.Bad = append(m.Bad, fmt.Sprintf("heartbeat %s names agent %q; the key's agent %q is used", key, hb.Agent, agent))
	}
	m.Truncated = hb.Truncated
	files := hb.Files[:0]
	for _, f := range hb.Files {
		if err := keyspace.ValidateFileKey(f.Key); err != nil {
			m.Bad = append(m.Bad, fmt.Sprintf("heartbeat %s: file %q: %v", key, f.Path, err))
			continue
		}
		files = append(files, f)
	}
	// Sorted by key; of a key listed twice the last entry counts.
	slices.SortStableFunc(files, func(a, b protocol.SeenFile) int { return strings.Compare(a.Key, b.Key) })
	m.Keys, m.Paths = make([]string, 0, len(files)), make([]string, 0, len(files))
	for i, f := range files {
		if i+1 < len(files) && files[i+1].Key == f.Key {
			continue
		}
		m.Keys = append(m.Keys, f.Key)
		m.Paths = append(m.Paths, f.Path)
	}
	return m
}
