package agent

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// fileRun is one assigned file: its assignment, its tailer and what Kafka
// has acknowledged of it.
type fileRun struct {
	topic     string
	key       string
	assignKey string
	createRev int64 // of assignKey: the fence of every write for this file
	identity  protocol.FileIdentity
	// cfg is the topic's config, shared by the topic's runs and never
	// modified (a copy each was 144 bytes of every run).
	cfg    *topics.Config
	cfgRev int64 // ModRevision of the topic config cfg was checked against

	// Set by the controller only (state.go has the transitions).
	state  runState
	since  time.Time          // when it entered state
	cancel context.CancelFunc // stops the tailer; set while tailing
	done   chan struct{}      // closed when the tailer goroutine returned
	// retryAt: an idle run whose tailer failed, or whose release failed,
	// starts again no sooner.
	retryAt time.Time
	// held is the descriptor the directory watcher opened, for the first
	// tailer of the file; set by the controller before that tailer
	// starts, taken by it.
	held *os.File
	// park is the registration that wakes the run while parked (park.go):
	// set on the tailer goroutine as it ends inactive, dropped by to.
	park *parkToken
	// slot: the run's tailer holds one of the start slots (starts.go).
	slot atomic.Bool

	// The checkpointer's own: the file's logagent_file_bytes_behind series
	// and the value it shows.
	behind      prometheus.Gauge
	behindShown int64

	// dirty: something a checkpoint records (the acknowledged offset,
	// the size, the state) may have moved since the checkpointer last
	// looked; it looks at no other run. Set by whoever moves it, cleared
	// by the checkpointer before it looks.
	dirty atomic.Bool
	// writable is whether the checkpointer may write the file's offset:
	// set by the controller as the state changes, read by the checkpointer.
	writable atomic.Bool
	// urgent: the file was read to its end (or is gone): its offset goes
	// to etcd at the next checkpoint, not the next etcd round, so the
	// other agents that list it see it shipped within finishedGrace.
	urgent atomic.Bool
	// rewritten is set when the tailer found the file's content replaced
	// (truncated and written again): a copy of it may continue its offset
	// (copies.go).
	rewritten atomic.Bool
	// seen is what this run's tailers read of the file's first bytes (up
	// to the fingerprint length): a copy of the file starts with them,
	// whatever its identity covers (copies.go). headBuf collects them, on
	// the tailer goroutine, until there are enough.
	seen     atomic.Pointer[seenHead]
	headBuf  []byte
	headDone bool

	mu sync.Mutex
	// path is where the file was last found: the controller moves it
	// (the file was found by identity under another name), the sinks'
	// logs and the checkpointer read it.
	path string
	// lapsed is set when the shipper dropped one of the file's records
	// unwritten (ship.ErrFenced): the records after it cannot be
	// acknowledged in order any more, so the run must start again from
	// its checkpoint.
	lapsed bool
	// started is set once the tailer has read the file's checkpoint: until
	// then acked means nothing and no checkpoint may be written (it would
	// overwrite the previous owner's with 0).
	started bool
	// shedding: the run was parked with records in flight; the queue's
	// storage goes once they are acknowledged (shed).
	shedding bool
	// pending holds the bytes (start and End) of every record handed to the
	// shipper and not yet acknowledged, in sequence order, with its ack
	// state; acked is the checkpoint candidate.
	pending pendingQueue
	head    uint64 // seq of the oldest pending record
	nextSeq uint64
	acked   int64 // End of the last line of the acknowledged prefix
	written int64 // last checkpoint written to etcd (-1: none yet)
	local   int64 // last checkpoint saved in the state file
	size    int64 // file size last seen, for bytes behind
	// writtenSize is the size in the last checkpoint: a checkpoint is also
	// rewritten when only the size moved, so lag read from etcd stays true
	// while Kafka acknowledges nothing.
	writtenSize int64
	// drained is closed when pending empties; made only while someone
	// waits (waitDrained): most runs are never waited for, and a channel
	// each is a megabyte at 10,000 files.
	drained chan struct{}
}

type pendingRec struct {
	start, end int64
	done       bool
}

func newFileRun(topic, key, assignKey string, createRev int64, path string, id protocol.FileIdentity, cfg *topics.Config) *fileRun {
	f := &fileRun{topic: topic, key: key, assignKey: assignKey, createRev: createRev, path: path, identity: id,
		cfg: cfg, written: -1, since: time.Now()}
	f.writable.Store(true)
	f.dirty.Store(true)
	return f
}

func (f *fileRun) ref() fileRef { return fileRef{topic: f.topic, file: f.key} }

// pathNow is where the file was last found.
func (f *fileRun) pathNow() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.path
}

func (f *fileRun) setPath(p string) {
	f.mu.Lock()
	f.path = p
	f.mu.Unlock()
}

// lapse marks that a record of the file was dropped unwritten.
func (f *fileRun) lapse() {
	f.mu.Lock()
	f.lapsed = true
	f.mu.Unlock()
}

// resetInflight forgets every record in flight: the shipper dropped (or
// will drop) them unwritten, so the next tailer reads on from the
// acknowledged offset. Sequences go on from where they were, so a late ack
// of a record that was on the wire after all marks nothing new as done.
func (f *fileRun) resetInflight() (dropped bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dropped = f.pending.len() > 0
	f.pending.truncate(0)
	f.head = f.nextSeq
	f.lapsed = false
	f.signalDrainedLocked()
	return dropped
}

func (f *fileRun) hasLapsed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lapsed
}

// shed lets go of the run's record queue now if nothing is in flight, or
// else once the last record in flight is acknowledged: a parked file
// keeps no buffer (the queue of a file that had a burst is tens of
// kilobytes, and at 10,000 files even the smallest adds up; a file parked
// as soon as it was read, at a start, still has its records in flight).
func (f *fileRun) shed() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shedding = true
	f.shedIfDrainedLocked()
}

func (f *fileRun) shedIfDrainedLocked() {
	if f.shedding && f.pending.len() == 0 {
		f.pending = pendingQueue{}
		f.shedding = false
	}
}

// noteSize records a size of the file seen by a scan or a stat.
func (f *fileRun) noteSize(size int64) {
	f.mu.Lock()
	if size > f.size {
		f.size = size
		f.dirty.Store(true)
	}
	f.mu.Unlock()
}

// moving reports whether the acknowledged offset differs from the size
// last seen: bytes are in flight, or unread, or the size is stale.
func (f *fileRun) moving() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked != f.size
}

func (f *fileRun) lastSize() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

func (f *fileRun) identityUnknown() bool { return f.identity.Fingerprint == "" }

// nextSequence is the sequence the next record tracked will get.
func (f *fileRun) nextSequence() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nextSeq
}

// trackAll registers records about to be sent, the first with sequence
// first (nextSequence: one sink sends for a file at a time). It refuses
// them, and returns false, if first is not the next sequence.
func (f *fileRun) trackAll(first uint64, recs []pendingRec) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if first != f.nextSeq {
		return false
	}
	f.pending.push(recs)
	f.nextSeq += uint64(len(recs))
	return true
}

// untrackFrom drops the newest records, from sequence seq on: the shipper
// did not accept them (ctx ended, or it stopped), so they are never acked.
func (f *fileRun) untrackFrom(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq >= f.nextSeq || seq < f.head {
		return
	}
	f.pending.truncate(int(seq - f.head))
	f.nextSeq = seq
	f.signalDrainedLocked()
}

// ack marks record seq done (acknowledged, or refused for good: it is
// skipped), advances the acknowledged prefix and returns the record's bytes
// (start to end of the file).
func (f *fileRun) ack(seq uint64) (start, end int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := int(seq - f.head); i >= 0 && i < f.pending.len() {
		p := f.pending.at(i)
		start, end = p.start, p.end
	}
	f.markLocked(seq, seq)
	return start, end
}

// ackRange marks records first to last acknowledged, like ack for each,
// and returns how many of them were pending and their bytes.
func (f *fileRun) ackRange(first, last uint64) (n int, bytes int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.markLocked(first, last)
}

// markLocked marks the pending records first to last done (those not
// done yet: it returns how many, and their bytes) and advances the
// acknowledged prefix.
func (f *fileRun) markLocked(first, last uint64) (n int, bytes int64) {
	for seq := first; seq <= last; seq++ {
		i := int(seq - f.head)
		if i < 0 || i >= f.pending.len() {
			continue
		}
		p := f.pending.at(i)
		if p.done {
			continue
		}
		p.done = true
		n++
		bytes += p.end - p.start
	}
	f.advanceLocked()
	return n, bytes
}

// advanceLocked moves the acknowledged prefix past the records done.
func (f *fileRun) advanceLocked() {
	n := 0
	for n < f.pending.len() && f.pending.at(n).done {
		f.acked = f.pending.at(n).end
		n++
	}
	if n > 0 {
		f.pending.dropOldest(n)
		f.head += uint64(n)
		f.signalDrainedLocked()
		f.shedIfDrainedLocked()
		f.dirty.Store(true)
	}
}

func (f *fileRun) signalDrainedLocked() {
	if f.pending.len() == 0 {
		if f.drained != nil {
			close(f.drained)
			f.drained = nil
		}
	}
}

// waitDrained blocks until nothing sent for the file awaits an ack.
func (f *fileRun) waitDrained(ctx context.Context) error {
	for {
		f.mu.Lock()
		if f.pending.len() == 0 {
			f.mu.Unlock()
			return nil
		}
		if f.drained == nil {
			f.drained = make(chan struct{})
		}
		ch := f.drained
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// checkpointDue returns the offset to write and the size to record, and
// whether either moved since the last write.
func (f *fileRun) checkpointDue() (offset, size int64, due bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked, f.size, f.started && (f.acked != f.written || f.size != f.writtenSize)
}

func (f *fileRun) markWritten(off, size int64) {
	f.mu.Lock()
	if off > f.written || f.written < 0 {
		f.written = off
	}
	f.writtenSize = size
	f.mu.Unlock()
}

// localDue returns the offset to save in the state file, and whether it
// moved since the last save.
func (f *fileRun) localDue() (offset int64, due bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked, f.started && f.acked != f.local
}

func (f *fileRun) markLocal(off int64) {
	f.mu.Lock()
	f.local = max(f.local, off)
	f.mu.Unlock()
}

// ackedOffset is the acknowledged prefix.
func (f *fileRun) ackedOffset() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked
}
