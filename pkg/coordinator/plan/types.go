package plan

import (
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/assign"
	"github.com/logferry/logferry/pkg/protocol"
)

// Reasons a file leaves its owner (label values of the moved-files metric).
const (
	ReasonRebalance       = "rebalance"        // another member should hold it
	ReasonUnreported      = "unreported"       // the owner no longer reports the file
	ReasonTopicRemoved    = "topic_removed"    // /topics/<P> was deleted
	ReasonDuplicate       = "duplicate"        // a second key for a file that has its owner
	ReasonOwnerGone       = "owner_gone"       // the owner's heartbeat for P is gone
	ReasonHandoverTimeout = "handover_timeout" // the owner did not release in time
)

// Reasons lists every reason, for pre-declaring metric labels.
var Reasons = []string{ReasonRebalance, ReasonUnreported, ReasonTopicRemoved, ReasonDuplicate, ReasonOwnerGone, ReasonHandoverTimeout}

// ActionKind is what one operation of a Group does.
type ActionKind int

// The action kinds.
const (
	Revoke ActionKind = iota + 1 // rewrite an active key as revoking
	Delete                       // delete a key (dead owner, handover timeout)
	Assign                       // create the key of the new owner
)

func (k ActionKind) String() string {
	switch k {
	case Revoke:
		return "revoke"
	case Delete:
		return "delete"
	case Assign:
		return "assign"
	}
	return fmt.Sprintf("ActionKind(%d)", int(k))
}

// Action describes one operation, for logs, metrics and the executor's
// read-your-writes barrier.
type Action struct {
	Kind   ActionKind
	Key    string
	Agent  string
	Reason string // Revoke and Delete
	To     string // the next owner ("" for nobody)
}

// Group is the operations for one file: they must be applied in one Txn,
// together with the leader guard. Groups of different files are
// independent and may share a Txn.
type Group struct {
	Topic, File string
	Cmps        []clientv3.Cmp
	Ops         []clientv3.Op
	Actions     []Action
}

// MaxGroupOps bounds one group so that it always fits a Txn (etcd's
// default --max-txn-ops is 128, and the leader guard takes one compare).
const MaxGroupOps = 64

// Plan is the result of one planning pass.
type Plan struct {
	Groups []Group
	// Topics is the status of every known topic, sorted by name (Leader and
	// Updated left for the writer).
	Topics []protocol.TopicStatus
	// NextDeadline is the earliest handover timeout to come (zero if none):
	// the reconciler must plan again then even if nothing changes.
	NextDeadline time.Time
	// Totals over every topic.
	Members, Files, Assignments, Pending, InvalidTopics int
	Junk                                                []protocol.JunkKey
	// Rings lists the shared topics whose consistent ring lags their
	// members (Options.AsyncRings only): the caller Syncs them off its
	// critical path.
	Rings []RingWork
	// RingSyncs are the small ring updates Plan made itself (AsyncRings).
	RingSyncs []RingSynced
	// Skipped counts the topics not planned again because nothing changed
	// since a plan of them that did nothing.
	Skipped int
	// GoneDeferred counts the assignments of agents that are gone but left
	// in place this pass by Options.OwnerGoneRate; GoneAgents the (topic,
	// agent) pairs they belong to; NewlyDeferred those of pairs deferred
	// for the first time.
	GoneDeferred, GoneAgents, NewlyDeferred int
	// GoneInGrace counts the assignments of agents gone for less than
	// Options.OwnerGoneGrace, left in place this pass.
	GoneInGrace int
	// Capped counts the files that need a change left for a later pass
	// by Options.MaxGroups.
	Capped int
}

// RingSynced reports a ring update made by Plan.
type RingSynced struct {
	Topic   string
	Members int
	Stats   assign.SyncStats
}

// inlineRingWork is the most ring work (see assign.Assigner.TrySync) Plan
// does itself with AsyncRings, about 10 ms: a few joins at thousands of
// members, a cold ring of up to about 140. Anything bigger goes to
// Plan.Rings, so that small topics keep assign's exact result.
const inlineRingWork = 10_000

// RingWork asks for one topic's ring to be brought to a member set:
// Assigner.Sync(Members), which may take long (seconds at thousands of
// members when cold).
type RingWork struct {
	Topic    string
	Assigner *assign.Assigner
	Members  []string
}

// Options configure a Planner.
type Options struct {
	// Leader is written into every assignment (the coordinator's --id).
	Leader string
	// HandoverTimeout is how long a revoking key may wait for its release.
	HandoverTimeout time.Duration
	// Assign configures pkg/assign; every coordinator must use the same.
	Assign assign.Config
	// AsyncRings makes Plan never do more than a few milliseconds of
	// consistent ring work: it computes with each ring as it stands
	// (assign.Assigner.ComputeNow) and lists the rings that lag by more in
	// Plan.Rings for the caller to Sync elsewhere. Without it, Plan syncs
	// rings itself (exact, but a cold ring of 10,000 members takes most of
	// a minute).
	AsyncRings bool
	// OwnerGoneRate bounds how fast the assignments of agents whose
	// heartbeat is gone are deleted and handed on, in files per second (0:
	// no bound). A whole (topic, agent) is torn down at a time, the longest
	// gone first, while the budget (refilled at the rate, up to one
	// second's worth) is positive; the rest wait, and come back to life
	// untouched if their agent returns meanwhile.
	OwnerGoneRate float64
	// OwnerGoneGrace is how long an agent's heartbeat for a topic may be
	// gone before its assignments there count as gone at all (0: no
	// grace). Within it they are left untouched, outside the budget of
	// OwnerGoneRate, so an agent whose lease comes back with the same files
	// keeps them; an agent that really died keeps its files from everyone
	// that much longer.
	OwnerGoneGrace time.Duration
	// MaxGroups bounds the groups one Plan returns (0: no bound). The
	// files past it are left for the next pass, which the writes of this
	// one wake: a cold start of a million files planned at once held about
	// 800 MB of operations, more than the rest of the leader.
	MaxGroups int
}
