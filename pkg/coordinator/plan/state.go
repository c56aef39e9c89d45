package plan

import (
	"fmt"
	"maps"
	"slices"

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
}

// Topic is everything known about one topic directory P.
type Topic struct {
	Name string
	// Config is nil while /topics/<P> does not exist.
	Config *TopicConfig
	// Members are the heartbeat keys /topics/<P>/<agent>, by agent.
	Members map[string]*Member
	// Assigns are the keys /assign/<agent>/<P>/<file>, by file then agent.
	Assigns map[string]map[string]*Assignment
	// Offsets are the files with a checkpoint /offsets/<P>/<file>.
	Offsets map[string]struct{}
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
	// Files maps each valid file key the agent reports to its path there.
	Files map[string]string
	// Keys are the same file keys, sorted (assign's Sees input).
	Keys []string
	// Truncated is the heartbeat's count of files left out for size.
	Truncated int
	// Bad lists reported file keys that break the naming rules (ignored).
	Bad []string
}

// Assignment is one key /assign/<agent>/<P>/<file>.
type Assignment struct {
	Key                string
	Agent, Topic, File string
	CreateRev, ModRev  int64
	Value              protocol.Assignment
	// Err is set when the value does not decode; such a key counts as an
	// active assignment (the agent may be shipping the file).
	Err error
}

// Revoking reports whether the key is marked for handover.
func (a *Assignment) Revoking() bool { return a.Err == nil && a.Value.State == protocol.StateRevoking }

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
	a, ok := t.Assigns[k.File][k.Agent]
	return a, ok
}

func (s *State) topic(p string) *Topic {
	t := s.topics[p]
	if t == nil {
		t = &Topic{Name: p, Members: map[string]*Member{}, Assigns: map[string]map[string]*Assignment{}, Offsets: map[string]struct{}{}}
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
		m := decodeHeartbeat(key, k.Agent, ev.KV)
		if m.Err != nil {
			s.junk[key] = m.Err.Error()
		}
		t.Members[k.Agent] = m
		return true
	case keyspace.KindAssign:
		t := s.topic(k.Topic)
		if ev.Type == mirror.Delete {
			if byAgent := t.Assigns[k.File]; byAgent != nil {
				delete(byAgent, k.Agent)
				if len(byAgent) == 0 {
					delete(t.Assigns, k.File)
				}
			}
			s.dropIfEmpty(t)
			return true
		}
		a := &Assignment{Key: key, Agent: k.Agent, Topic: k.Topic, File: k.File,
			CreateRev: ev.KV.CreateRevision, ModRev: ev.KV.ModRevision}
		if err := protocol.Unmarshal(key, ev.KV.Value, &a.Value); err != nil {
			a.Err = err
			s.junk[key] = err.Error()
		} else if a.Value.State != protocol.StateActive && a.Value.State != protocol.StateRevoking {
			a.Err = fmt.Errorf("assignment %s: unknown state %q", key, a.Value.State)
			s.junk[key] = a.Err.Error()
		}
		byAgent := t.Assigns[k.File]
		if byAgent == nil {
			byAgent = map[string]*Assignment{}
			t.Assigns[k.File] = byAgent
		}
		byAgent[k.Agent] = a
		return true
	case keyspace.KindOffset:
		t := s.topic(k.Topic)
		if ev.Type == mirror.Delete {
			delete(t.Offsets, k.File)
			s.dropIfEmpty(t)
		} else {
			t.Offsets[k.File] = struct{}{}
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
	m := &Member{Agent: agent, Lease: kv.Lease, ModRev: kv.ModRevision, Files: map[string]string{}}
	var hb protocol.Heartbeat
	if err := protocol.Unmarshal(key, kv.Value, &hb); err != nil {
		m.Err = err
		return m
	}
	if hb.Agent != "" && hb.Agent != agent {
		m.Bad = append(m.Bad, fmt.Sprintf("heartbeat %s names agent %q; the key's agent %q is used", key, hb.Agent, agent))
	}
	m.Truncated = hb.Truncated
	for _, f := range hb.Files {
		if err := keyspace.ValidateFileKey(f.Key); err != nil {
			m.Bad = append(m.Bad, fmt.Sprintf("heartbeat %s: file %q: %v", key, f.Path, err))
			continue
		}
		m.Files[f.Key] = f.Path
	}
	m.Keys = slices.Sorted(maps.Keys(m.Files))
	return m
}
