package keyspace

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by the validators and by Parse. Wrapped errors carry the
// offending value.
var (
	ErrBadRoot    = errors.New("keyspace: bad root prefix")
	ErrBadTopic   = errors.New("keyspace: bad topic name")
	ErrBadAgent   = errors.New("keyspace: bad agent id")
	ErrBadFileKey = errors.New("keyspace: bad file key")
	ErrBadKey     = errors.New("keyspace: key does not parse")
)

// Limits of the segment rules.
const (
	MaxTopicLen   = 249 // Kafka's limit for topic names
	MaxAgentLen   = 253 // a DNS name
	MaxFileKeyLen = 128
)

// Kind says which family a parsed key belongs to.
type Kind int

// The key families of the layout.
const (
	KindTopic Kind = iota + 1
	KindHeartbeat
	KindAssign
	KindOffset
	KindElection
	KindCoordinatorStatus
	KindTopicStatus
	KindAgentStatus
)

var kindNames = map[Kind]string{
	KindTopic:             "topic",
	KindHeartbeat:         "heartbeat",
	KindAssign:            "assign",
	KindOffset:            "offset",
	KindElection:          "election",
	KindCoordinatorStatus: "coordinator-status",
	KindTopicStatus:       "topic-status",
	KindAgentStatus:       "agent-status",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Key is a parsed key. Only the fields its Kind uses are set.
type Key struct {
	Kind  Kind
	Topic string // KindTopic, KindHeartbeat, KindAssign, KindOffset, KindTopicStatus
	Agent string // KindHeartbeat, KindAssign, KindAgentStatus
	File  string // KindAssign, KindOffset
	// Candidate is the election key's suffix (the lease id in hex).
	Candidate string
}

// Space builds and parses keys under one root prefix. The zero value is the
// layout with no root prefix.
type Space struct {
	root string
}

// New returns the key space under root. root is either empty or starts with
// "/" and does not end with "/" (a trailing slash is trimmed); it must not
// contain empty segments.
func New(root string) (Space, error) {
	if root == "" || root == "/" {
		return Space{}, nil
	}
	trimmed := strings.TrimSuffix(root, "/")
	if !strings.HasPrefix(trimmed, "/") || strings.Contains(trimmed, "//") ||
		strings.ContainsAny(trimmed, "\x00 \t\n") {
		return Space{}, fmt.Errorf("%w: %q: want empty or /name[/name...]", ErrBadRoot, root)
	}
	return Space{root: trimmed}, nil
}

// Root is the root prefix ("" for none).
func (s Space) Root() string { return s.root }

// TopicsPrefix is the prefix of every topic config and heartbeat key.
func (s Space) TopicsPrefix() string { return s.root + "/topics/" }

// Topic is the key of topic P's config.
func (s Space) Topic(p string) string { return s.root + "/topics/" + p }

// HeartbeatsPrefix is the prefix of topic P's heartbeat keys.
func (s Space) HeartbeatsPrefix(p string) string { return s.root + "/topics/" + p + "/" }

// Heartbeat is the key of agent's heartbeat for topic P.
func (s Space) Heartbeat(p, agent string) string { return s.root + "/topics/" + p + "/" + agent }

// AssignPrefix is the prefix of every assignment.
func (s Space) AssignPrefix() string { return s.root + "/assign/" }

// AgentAssignPrefix is the prefix of agent's assignments.
func (s Space) AgentAssignPrefix(agent string) string { return s.root + "/assign/" + agent + "/" }

// Assign is the key of the assignment of file (of topic P) to agent.
func (s Space) Assign(agent, p, file string) string {
	return s.root + "/assign/" + agent + "/" + p + "/" + file
}

// OffsetsPrefix is the prefix of every checkpoint.
func (s Space) OffsetsPrefix() string { return s.root + "/offsets/" }

// TopicOffsetsPrefix is the prefix of topic P's checkpoints.
func (s Space) TopicOffsetsPrefix(p string) string { return s.root + "/offsets/" + p + "/" }

// Offset is the key of file's checkpoint in topic P.
func (s Space) Offset(p, file string) string { return s.root + "/offsets/" + p + "/" + file }

// ElectionPrefix is the concurrency.Election prefix of the coordinators.
func (s Space) ElectionPrefix() string { return s.root + "/coordinator/election/" }

// StatusPrefix is the prefix of every status key.
func (s Space) StatusPrefix() string { return s.root + "/status/" }

// CoordinatorStatus is the key of the leader's status.
func (s Space) CoordinatorStatus() string { return s.root + "/status/coordinator" }

// TopicStatusPrefix is the prefix of every topic status key.
func (s Space) TopicStatusPrefix() string { return s.root + "/status/topics/" }

// TopicStatus is the key of topic P's status.
func (s Space) TopicStatus(p string) string { return s.root + "/status/topics/" + p }

// AgentStatusPrefix is the prefix of every agent status key.
func (s Space) AgentStatusPrefix() string { return s.root + "/status/agents/" }

// AgentStatus is the key of agent's status.
func (s Space) AgentStatus(agent string) string { return s.root + "/status/agents/" + agent }

// Parse reads a key of this space. It returns an error wrapping ErrBadKey
// (and, when a segment is at fault, the segment's error) for anything that
// is not exactly one of the layout's shapes.
func (s Space) Parse(key string) (Key, error) {
	rest, ok := strings.CutPrefix(key, s.root+"/")
	if !ok {
		return Key{}, fmt.Errorf("%w: %q is outside root %q", ErrBadKey, key, s.root)
	}
	parts := strings.Split(rest, "/")
	bad := func(why string) (Key, error) {
		return Key{}, fmt.Errorf("%w: %q: %s", ErrBadKey, key, why)
	}
	seg := func(k Key, checks ...error) (Key, error) {
		if err := errors.Join(checks...); err != nil {
			return Key{}, fmt.Errorf("%w: %q: %w", ErrBadKey, key, err)
		}
		return k, nil
	}
	switch parts[0] {
	case "topics":
		switch len(parts) {
		case 2:
			return seg(Key{Kind: KindTopic, Topic: parts[1]}, ValidateTopic(parts[1]))
		case 3:
			return seg(Key{Kind: KindHeartbeat, Topic: parts[1], Agent: parts[2]},
				ValidateTopic(parts[1]), ValidateAgent(parts[2]))
		}
		return bad("want /topics/<P> or /topics/<P>/<agent>")
	case "assign":
		if len(parts) != 4 {
			return bad("want /assign/<agent>/<P>/<file>")
		}
		return seg(Key{Kind: KindAssign, Agent: parts[1], Topic: parts[2], File: parts[3]},
			ValidateAgent(parts[1]), ValidateTopic(parts[2]), ValidateFileKey(parts[3]))
	case "offsets":
		if len(parts) != 3 {
			return bad("want /offsets/<P>/<file>")
		}
		return seg(Key{Kind: KindOffset, Topic: parts[1], File: parts[2]},
			ValidateTopic(parts[1]), ValidateFileKey(parts[2]))
	case "coordinator":
		if len(parts) == 3 && parts[1] == "election" && parts[2] != "" {
			return Key{Kind: KindElection, Candidate: parts[2]}, nil
		}
		return bad("want /coordinator/election/<candidate>")
	case "status":
		switch {
		case len(parts) == 2 && parts[1] == "coordinator":
			return Key{Kind: KindCoordinatorStatus}, nil
		case len(parts) == 3 && parts[1] == "topics":
			return seg(Key{Kind: KindTopicStatus, Topic: parts[2]}, ValidateTopic(parts[2]))
		case len(parts) == 3 && parts[1] == "agents":
			return seg(Key{Kind: KindAgentStatus, Agent: parts[2]}, ValidateAgent(parts[2]))
		}
		return bad("want /status/coordinator, /status/topics/<P> or /status/agents/<agent>")
	}
	return bad(fmt.Sprintf("unknown family %q", parts[0]))
}

// Build is the inverse of Parse.
func (s Space) Build(k Key) (string, error) {
	var checks []error
	var key string
	switch k.Kind {
	case KindTopic:
		checks, key = []error{ValidateTopic(k.Topic)}, s.Topic(k.Topic)
	case KindHeartbeat:
		checks, key = []error{ValidateTopic(k.Topic), ValidateAgent(k.Agent)}, s.Heartbeat(k.Topic, k.Agent)
	case KindAssign:
		checks = []error{ValidateAgent(k.Agent), ValidateTopic(k.Topic), ValidateFileKey(k.File)}
		key = s.Assign(k.Agent, k.Topic, k.File)
	case KindOffset:
		checks, key = []error{ValidateTopic(k.Topic), ValidateFileKey(k.File)}, s.Offset(k.Topic, k.File)
	case KindElection:
		if k.Candidate == "" || strings.Contains(k.Candidate, "/") {
			return "", fmt.Errorf("%w: election candidate %q", ErrBadKey, k.Candidate)
		}
		key = s.ElectionPrefix() + k.Candidate
	case KindCoordinatorStatus:
		key = s.CoordinatorStatus()
	case KindTopicStatus:
		checks, key = []error{ValidateTopic(k.Topic)}, s.TopicStatus(k.Topic)
	case KindAgentStatus:
		checks, key = []error{ValidateAgent(k.Agent)}, s.AgentStatus(k.Agent)
	default:
		return "", fmt.Errorf("%w: unknown kind %v", ErrBadKey, k.Kind)
	}
	if err := errors.Join(checks...); err != nil {
		return "", err
	}
	return key, nil
}

// ValidateTopic checks Kafka's topic-name rules, which topic directory names
// follow too.
func ValidateTopic(p string) error {
	return validateName(ErrBadTopic, p, MaxTopicLen, "")
}

// ValidateAgent checks an agent id.
func ValidateAgent(a string) error {
	return validateName(ErrBadAgent, a, MaxAgentLen, ":")
}

// ValidateFileKey checks a file key.
func ValidateFileKey(f string) error {
	return validateName(ErrBadFileKey, f, MaxFileKeyLen, "")
}

func validateName(sentinel error, s string, maxLen int, extra string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", sentinel)
	case len(s) > maxLen:
		return fmt.Errorf("%w: %q is %d bytes, at most %d allowed", sentinel, s, len(s), maxLen)
	case s == "." || s == "..":
		return fmt.Errorf("%w: %q is reserved", sentinel, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || strings.IndexByte(extra, c) >= 0 {
			continue
		}
		allowed := "A-Z a-z 0-9 . _ -"
		if extra != "" {
			allowed += " " + extra
		}
		return fmt.Errorf("%w: %q has %q at byte %d; allowed: %s", sentinel, s, s[i:i+1], i, allowed)
	}
	return nil
}
