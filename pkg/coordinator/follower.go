package coordinator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/mirror"
)

// follower owns, for the coordinator's whole life, the one mirror of
// /topics/, /assign/ and /offsets/ and the plan.State built from it, leader
// and standby alike. A term borrows the State (see hold) instead of
// listing everything again: at a million files a list took about a
// minute, and every leader flip paid it before its first pass.
//
// Data flows one way: the mirror's goroutine (run) only queues batches and
// marks the follower dirty; whoever holds the State (the standby loop, or
// a term's reconciler, never both) applies them with drain. Holding passes
// from one to the other through standbyControl: the standby loop has
// returned before a term touches the State, and starts again after the
// term's reconciler has returned.
type follower struct {
	c *Coordinator

	dirty     chan struct{} // capacity 1: "a batch is queued"
	resyncReq chan string   // capacity 1: "re-list now", with the reason
	// progressReq asks the mirror for a progress notification
	// (mirror.WithProgressRequests); capacity 1.
	progressReq chan struct{}

	qmu   sync.Mutex // guards queue, snapGen and needGen
	queue []queued
	// snapGen counts the mirror (re)starts; needGen is the start whose
	// list the State must hold before it may be planned from (after a
	// write whose outcome is unknown, a list made after the write).
	snapGen, needGen int64

	// Owned by the holder of the State.
	state   *plan.State
	listing bool  // a list is being applied: the state is incomplete
	haveGen int64 // the start whose list is applied
	// synced is the highest revision at or below which the State is
	// known to hold every change: the revision of the last list applied,
	// or of a progress notification (events alone cannot say it, since
	// the prefixes' watches deliver independently).
	synced int64
}

type queued struct {
	b   mirror.Batch
	gen int64
}

func newFollower(c *Coordinator) *follower {
	return &follower{
		c:           c,
		dirty:       make(chan struct{}, 1),
		resyncReq:   make(chan string, 1),
		progressReq: make(chan struct{}, 1),
		needGen:     1,
		state:       plan.NewState(c.cfg.Space),
	}
}

func (f *follower) markDirty() {
	select {
	case f.dirty <- struct{}{}:
	default:
	}
}

// requestResync makes the mirror re-list and the State unfit until that
// list is applied. Safe from any goroutine.
func (f *follower) requestResync(reason string) {
	f.qmu.Lock()
	f.needGen = f.snapGen + 1
	f.qmu.Unlock()
	select {
	case f.resyncReq <- reason:
	default:
	}
}

// requestProgress asks the mirror to report, with a progress batch, a
// revision up to which it has handed over every change. Safe from any
// goroutine.
func (f *follower) requestProgress() {
	select {
	case f.progressReq <- struct{}{}:
	default:
	}
}

// run runs the mirror until ctx is done, restarting it (a full re-list)
// whenever a re-list is requested, and every ResyncInterval if set.
//
// The mirror keeps nothing (WithoutState): the State decodes what it needs
// and keeps that, and is rebuilt from every list, which arrives page by
// page, so a list never holds more than a page of values at once. A
// million keys kept by the mirror as well cost about 60 bytes each, and a
// list handed over whole held every value of it at once. /offsets/ is
// listed keys-only: planning and status need only which checkpoints
// exist, and a million checkpoint values are hundreds of megabytes to read.
func (f *follower) run(ctx context.Context) error {
	cfg := f.c.cfg
	ks := cfg.Space
	var periodic <-chan time.Time
	if iv := cfg.ResyncInterval; iv > 0 {
		tick := time.NewTicker(iv)
		defer tick.Stop()
		periodic = tick.C
	}
	log := f.c.log.With("part", "follower")
	// Learn etcd's version while it answers, for a term that starts
	// when it does not.
	if ok, why := f.c.progressInOrder(ctx); !ok {
		log.Info("a new term will list everything instead of trusting etcd's progress notifications", "why", why)
	}
	for {
		f.qmu.Lock()
		f.snapGen++
		gen := f.snapGen
		f.qmu.Unlock()
		m, err := mirror.New(cfg.Client, []string{ks.TopicsPrefix(), ks.AssignPrefix(), ks.OffsetsPrefix()},
			mirror.WithLogger(log),
			mirror.WithoutState(), mirror.WithKeysOnly(ks.OffsetsPrefix()),
			mirror.WithProgressRequests(f.progressReq),
			mirror.WithBackoff(50*time.Millisecond, 2*time.Second),
			mirror.WithResyncHook(func(reason string) {
				f.c.m.resyncs.WithLabelValues(resyncReason(reason)).Inc()
			}))
		if err != nil {
			return err
		}
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- m.Run(mctx, func(b mirror.Batch) error {
				f.qmu.Lock()
				f.queue = append(f.queue, queued{b: b, gen: gen})
				f.qmu.Unlock()
				f.markDirty()
				return nil
			})
		}()
		var reason string
		select {
		case err := <-done:
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("mirror stopped: %w", err)
		case <-ctx.Done():
			cancel()
			<-done
			return nil
		case <-periodic:
			reason = resyncPeriodic
		case reason = <-f.resyncReq:
		}
		cancel()
		<-done
		f.c.m.resyncs.WithLabelValues(reason).Inc()
		log.Info("re-listing", "reason", reason)
	}
}

// drain applies every queued batch to the State; only the holder calls it.
// onEvent sees every event applied, onSynced every revision at or below
// which the State now holds every change (a list's, a progress
// notification's). It reports whether any batch could change a plan.
func (f *follower) drain(onEvent func(mirror.Event), onSynced func(rev int64)) bool {
	f.qmu.Lock()
	q := f.queue
	f.queue = nil
	f.qmu.Unlock()
	relevant := false
	for _, e := range q {
		if f.apply(e.b, e.gen, onEvent, onSynced) {
			relevant = true
		}
	}
	return relevant
}

// apply applies one batch. A list comes page by page (mirror.WithoutState):
// the first page resets the state, and until the last one the state is
// incomplete (listing), so nothing is planned from it.
func (f *follower) apply(b mirror.Batch, gen int64, onEvent func(mirror.Event), onSynced func(int64)) bool {
	if b.Progress {
		f.synced = max(f.synced, b.Revision)
		if onSynced != nil {
			onSynced(b.Revision)
		}
		return false
	}
	if b.Snapshot {
		f.state.Reset()
		f.listing = true
	}
	relevant := b.Snapshot || b.Resync
	for _, ev := range b.Events {
		if f.state.Apply(ev) {
			relevant = true
		}
		if onEvent != nil {
			onEvent(ev)
		}
	}
	f.state.SetRevision(b.Revision)
	if f.listing && !b.Partial {
		f.listing = false
		f.haveGen = max(f.haveGen, gen)
		f.synced = max(f.synced, b.Revision)
		f.c.m.stateLists.Inc()
		if onSynced != nil {
			onSynced(b.Revision)
		}
	}
	return relevant
}

// complete reports whether the State holds a whole list, and one made
// after any write of unknown outcome; only the holder calls it.
func (f *follower) complete() bool {
	f.qmu.Lock()
	need := f.needGen
	f.qmu.Unlock()
	return f.haveGen >= need && !f.listing
}

// standbyControl hands the State between the standby loop and a term: the
// loop stops (and has returned) before a term holds the State, and runs
// again after.
type standbyControl struct {
	mu     sync.Mutex
	paused bool
	resume chan struct{}      // closed when paused ends
	cancel context.CancelFunc // of the standby loop running, if any
	done   chan struct{}      // closed when that loop returned
}

// pauseStandby stops the standby loop and waits until it has.
func (c *Coordinator) pauseStandby() {
	s := &c.standby
	s.mu.Lock()
	s.paused = true
	s.resume = make(chan struct{})
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (c *Coordinator) resumeStandby() {
	s := &c.standby
	s.mu.Lock()
	s.paused = false
	close(s.resume)
	s.mu.Unlock()
}

// standbyLoop holds the State whenever no term runs, until ctx is done.
func (c *Coordinator) standbyLoop(ctx context.Context) error {
	s := &c.standby
	for {
		s.mu.Lock()
		if s.paused {
			resume := s.resume
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil
			case <-resume:
			}
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		s.cancel, s.done = cancel, done
		s.mu.Unlock()
		c.standBy(fctx)
		cancel()
		close(done)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// standBy keeps the State current while no term runs: it applies the
// follower's batches as they come and keeps the planner's rings in step
// with each shared topic's members, so that a term here starts from a
// current State and warm rings. It writes nothing. It returns when ctx is
// done.
func (c *Coordinator) standBy(ctx context.Context) {
	f := c.follow
	log := c.log.With("part", "standby")
	// due: members may have changed since the rings were last checked
	// (checkpoints never change them, and come by the thousand a second).
	due := true
	for {
		if f.drain(nil, nil) {
			due = true
		}
		if due && f.complete() { // an incomplete list says nothing about members
			due = false
			work, err := c.planner.Rings(f.state)
			if err != nil {
				log.Warn("ring work not computed", "err", err)
			}
			c.rings.request(work)
		}
		// Coalesce bursts as the leader's reconciler does.
		t := time.NewTimer(c.cfg.ReconcileInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		select {
		case <-ctx.Done():
			return
		case <-f.dirty:
		}
	}
}
