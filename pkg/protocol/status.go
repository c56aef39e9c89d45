package protocol

import "time"

// Topic states reported in TopicStatus.State.
const (
	TopicOK           = "ok"           // config valid; assignments reconciled
	TopicInvalid      = "invalid"      // config does not decode or validate; assignments left untouched
	TopicPaused       = "paused"       // config says paused; assignments left untouched
	TopicUnconfigured = "unconfigured" // keys exist for P but /topics/<P> does not; assignments released
)

// CoordinatorStatus is the value of /status/coordinator, written by the
// leader. It is not on a lease: after a crash it still names the last
// leader, and LeaderSince and Updated tell how stale it is.
type CoordinatorStatus struct {
	V           int       `json:"v"`
	Leader      string    `json:"leader"`       // --id of the leader that wrote it
	Version     string    `json:"version"`      // the leader's build version
	LeaderSince time.Time `json:"leader_since"` // when this leader won the election
	Updated     time.Time `json:"updated"`      // when this value was written
	// LastReconcile is when the last reconcile started and
	// LastReconcileSeconds how long it took (planning and writing).
	LastReconcile        time.Time `json:"last_reconcile"`
	LastReconcileSeconds float64   `json:"last_reconcile_seconds"`
	// Revision is the etcd revision of the snapshot the last reconcile read.
	Revision int64 `json:"revision"`
	// Counts over every topic.
	Topics           int `json:"topics"`
	InvalidTopics    int `json:"invalid_topics"`
	Members          int `json:"members"`     // distinct agents with a live heartbeat
	Files            int `json:"files"`       // distinct (topic, file) pairs reported by members
	Assignments      int `json:"assignments"` // keys under /assign/
	PendingHandovers int `json:"pending_handovers"`
	// JunkKeys lists (at most MaxStatusList of) the keys under /topics/,
	// /assign/ and /offsets/ that do not parse or whose value does not
	// decode, with the reason; they are ignored. JunkCount is the full count.
	JunkKeys  []JunkKey `json:"junk_keys,omitempty"`
	JunkCount int       `json:"junk_count"`
}

// JunkKey is one ignored key and why.
type JunkKey struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

// MaxStatusList bounds every list in a status value, so a flood of junk
// keys or problems cannot grow a status value past etcd's request limit.
const MaxStatusList = 100

// TopicStatus is the value of /status/topics/<P>, written by the leader.
type TopicStatus struct {
	V       int       `json:"v"`
	Topic   string    `json:"topic"`
	Leader  string    `json:"leader"`
	Updated time.Time `json:"updated"`
	// State is TopicOK, TopicInvalid, TopicPaused or TopicUnconfigured.
	State string `json:"state"`
	// Error is the config's decoding or validation error, naming the field,
	// when State is TopicInvalid.
	Error  string `json:"error,omitempty"`
	Shared bool   `json:"shared"`
	// Members counts live heartbeats; Files the distinct files they report;
	// Assigned the files with an active assignment; Pending the revoking
	// assignments (handovers under way); Unassigned the reported files with
	// no assignment at all; Checkpoints the keys under /offsets/<P>/.
	Members     int `json:"members"`
	Files       int `json:"files"`
	Assigned    int `json:"assigned"`
	Pending     int `json:"pending"`
	Unassigned  int `json:"unassigned"`
	Checkpoints int `json:"checkpoints"`
	// Load is the number of assignments (active or revoking) per agent.
	Load map[string]int `json:"load,omitempty"`
	// Problems are things an operator should look at (unreadable
	// heartbeats, bad file keys, a file held by two agents), at most
	// MaxStatusList of them.
	Problems []string `json:"problems,omitempty"`
}

func (s *CoordinatorStatus) setV() { s.V = Version }
func (s *TopicStatus) setV()       { s.V = Version }

func (s *CoordinatorStatus) version() int { return s.V }
func (s *TopicStatus) version() int       { return s.V }
