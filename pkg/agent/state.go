package agent

import (
	"fmt"
	"time"
)

// fileRef names a file of a topic directory: (topic, file key). It is the
// one key of every per-file map of the agent.
type fileRef struct{ topic, file string }

func (r fileRef) String() string { return r.topic + "/" + r.file }

// runState is where a file run is in its life. Every change goes through
// fileRun.to, which holds the table of allowed transitions: a run's state
// is this one value, not a set of flags to keep consistent.
//
//	          start              read to the end of a rotated file
//	idle ───────────► tailing ─────────────────────────► finished
//	  ▲  stop (pause,   │  │ │ file gone or rewritten         │
//	  └──config, error)─┘  │ └──────────────► gone            │ grew again
//	  ▲                    │ quiet for --close-inactive       │
//	  │                    ▼                                  │
//	  └────── woken ───  parked                               │
//	  └───────────────────────────────────────────────────────┘
//
//	any of idle, tailing, parked, finished, gone ── revoking ──► releasing
//	releasing ── release Txn failed (etcd) ──► idle (the release is retried
//	             with the same run, so its acknowledged offset is kept)
//	any ── assignment gone or recreated, guard failed, lease not proved,
//	       released ──► fenced (terminal: nothing more is written)
type runState uint8

const (
	// stateIdle: assigned, no tailer runs (not started yet, topic paused or
	// refused, file not found here yet, or the last tailer failed and waits
	// for the next reconcile).
	stateIdle runState = iota
	// stateTailing: a tailer goroutine reads the file.
	stateTailing
	// stateFinished: a rotated file was read to its end and stayed idle.
	// It stays listed in the heartbeat for a grace period (finishedGrace)
	// and is read on if it grows again.
	stateFinished
	// stateGone: the file was deleted or its head rewritten: nothing more
	// can be read under this identity.
	stateGone
	// stateReleasing: the assignment is revoking; the tailer stopped and a
	// release goroutine waits for Kafka's acks, then writes the final
	// offset and deletes the assignment in one guarded Txn.
	stateReleasing
	// stateFenced: the run may write nothing more. Terminal: the run is
	// dropped from the controller's map as it enters this state.
	stateFenced
	// stateParked: the file, still current, did not grow for
	// --close-inactive. No tailer runs; the run keeps the descriptor and a
	// registration (park) through which a change of the file wakes it
	// (park.go). Listed in the heartbeat like a tailing file.
	stateParked
)

var stateNames = [...]string{"idle", "tailing", "finished", "gone", "releasing", "fenced", "parked"}

func (s runState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("runState(%d)", s)
}

// allowed[from] is the set of states a run may go to from from.
var allowed = [...][]runState{
	stateIdle:      {stateTailing, stateReleasing, stateFenced},
	stateTailing:   {stateIdle, stateFinished, stateGone, stateReleasing, stateFenced, stateParked},
	stateParked:    {stateIdle, stateReleasing, stateFenced},
	stateFinished:  {stateIdle, stateReleasing, stateFenced},
	stateGone:      {stateReleasing, stateFenced},
	stateReleasing: {stateIdle, stateFenced},
	stateFenced:    {},
}

// to moves the run to state next. Only the controller calls it. A
// transition the table does not allow is a bug: it panics, so tests find
// it, rather than leaving a run in a state nothing expects.
func (f *fileRun) to(next runState) {
	ok := false
	for _, s := range allowed[f.state] {
		ok = ok || s == next
	}
	if !ok {
		panic(fmt.Sprintf("agent: file run %s/%s: no transition from %v to %v", f.topic, f.key, f.state, next))
	}
	if f.park != nil && next != stateParked {
		// Only a parked run is woken by its file's changes; a tailer that
		// registered and was stopped before it could park leaves one too.
		f.park.release()
		f.park = nil
	}
	f.state, f.since = next, time.Now()
	// Checkpoints follow the acknowledged offset while the run owns the
	// file; a releasing run writes its final offset in the release Txn
	// itself, and a fenced one writes nothing.
	f.writable.Store(next != stateReleasing && next != stateFenced)
	f.dirty.Store(true)
	if next == stateFinished || next == stateGone {
		f.urgent.Store(true)
	}
}
