package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/tailer"
	"github.com/logferry/logferry/pkg/topics"
)

// controller owns the file runs. Its goroutine only records what its
// inputs say (topics, assignments, the inventory's snapshot, tailer exits,
// release results, fenced checkpoints, lease proofs) and marks itself
// dirty; one reconcile then compares the desired runs (desired, a pure
// function) with the runs it has and starts, stops or releases tailers.
// It does no disk or etcd I/O itself: it waits only for a stopped tailer
// goroutine to return, so it can stop a taken file at once.
type controller struct {
	a     *Agent
	inv   *inventory
	cp    *checkpointer
	board *topicBoard
	held  *heldFiles
	lost  *lostLedger
	probs *problems

	topicsC       chan struct{}
	topics        map[string]topics.Entry
	assigns       map[fileRef]assignment
	assignsLoaded bool
	snap          *snapshot
	runs          map[fileRef]*fileRun
	dirty         chan struct{}
	// What the next reconcile must look at: everything (full: an input
	// changed), or only the runs in touched (a tailer ended, a parked file
	// was woken). At 10,000 files a reconcile of everything takes
	// milliseconds, and parking makes tailer exits common: each must not
	// cost one.
	full    bool
	touched map[fileRef]bool
	// configs are the topic configs the runs share, one per topic and
	// config revision.
	configs map[string]sharedConfig
	// reserved are runs that the start queue gave a slot to
	// (onSlotsFreed), until the next reconcile starts them.
	reserved []*fileRun
	// publishAt, when not nil, fires the publication of the runs that the
	// reconciles of touched runs put off (publishDelay).
	publishAt *time.Timer

	// The lease. fenced: no lease is proved alive, so no run exists and the
	// assignments are not watched; a watch is started anew (its snapshot
	// re-read) each time a lease is proved again.
	fenced    bool
	everAlive bool
	watch     *assignWatch
	gen       int
	batches   chan genBatch
	oldWatch  []*ended // cancelled watches, waited for at the end

	tailerExits chan tailerExit
	releases    chan releaseDone
	// Release goroutines run under releaseCtx, which the clean stop cancels
	// at its deadline.
	releaseCtx    context.Context
	releaseCancel context.CancelFunc
	releasing     sync.WaitGroup
	stopped       chan struct{} // closed when run returns
}

type assignWatch struct {
	gen    int
	cancel context.CancelFunc
	ended  *ended
}

type genBatch struct {
	gen int
	b   mirror.Batch
}

// events the controller receives from goroutines it started.
type (
	tailerExit struct {
		fr   *fileRun
		err  error
		done chan struct{} // identifies the run that ended
	}
	releaseDone struct {
		fr     *fileRun
		result string
	}
)

func newController(a *Agent, inv *inventory, cp *checkpointer, board *topicBoard, held *heldFiles, lost *lostLedger, probs *problems) *controller {
	c := &controller{
		a: a, inv: inv, cp: cp, board: board, held: held, lost: lost, probs: probs,
		topicsC:     board.subscribe(),
		assigns:     map[fileRef]assignment{},
		runs:        map[fileRef]*fileRun{},
		dirty:       make(chan struct{}, 1),
		touched:     map[fileRef]bool{},
		configs:     map[string]sharedConfig{},
		fenced:      true,
		batches:     make(chan genBatch),
		tailerExits: make(chan tailerExit, 16),
		releases:    make(chan releaseDone, 16),
		stopped:     make(chan struct{}),
	}
	c.releaseCtx, c.releaseCancel = context.WithCancel(context.Background())
	return c
}

// run is the controller's goroutine. It returns ctx's error, or the reason a
// part it depends on ended.
func (c *controller) run(ctx context.Context, p parts) error {
	defer close(c.stopped)
	a := c.a
	lease := time.NewTimer(0)
	defer lease.Stop()
	for {
		var watchEnded <-chan struct{}
		if c.watch != nil {
			watchEnded = c.watch.ended.done
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.topicsWatch.done:
			return partEnded(ctx, "etcd watch of the topics", p.topicsWatch.err)
		case <-watchEnded:
			return partEnded(ctx, "etcd watch of the assignments", c.watch.ended.err)
		case <-p.ship.done:
			return fmt.Errorf("agent: shipper stopped: %w", p.ship.err)
		case <-p.reg.done:
			return fmt.Errorf("agent: heartbeat stopped: %w", p.reg.err)
		case <-p.inventory.done:
			return partEnded(ctx, "inventory", p.inventory.err)
		case <-p.checkpoints.done:
			return partEnded(ctx, "checkpointer", p.checkpoints.err)
		case <-c.topicsC:
			c.topics, _ = c.board.get()
		case gb := <-c.batches:
			if gb.gen != c.gen || c.fenced {
				continue // a watch cancelled since
			}
			c.onAssignBatch(gb.b)
		case s := <-c.inv.Snapshots():
			if c.onSnapshot(s) {
				c.full = true
			}
			if c.full || len(c.touched) > 0 {
				poke(c.dirty) // an empty poke would look at everything
			}
			continue
		case ex := <-c.tailerExits:
			c.onTailerExit(ex)
			c.touched[ex.fr.ref()] = true
			poke(c.dirty)
			continue
		case <-c.a.parking.wake:
			if c.onTouched() {
				poke(c.dirty)
			}
			continue
		case <-c.a.starts.freed:
			if c.onSlotsFreed() {
				poke(c.dirty)
			}
			continue
		case <-publishC(c.publishAt):
			c.publishAt = nil
			c.publish()
			continue
		case rd := <-c.releases:
			c.onRelease(rd)
		case frs := <-c.cp.Fenced():
			c.onFenced(frs)
		case <-a.lapsed:
			c.onLapsed()
		case <-a.reg.Proofs():
			if !c.checkLease(ctx, lease) {
				continue
			}
		case <-lease.C:
			if !c.checkLease(ctx, lease) {
				continue
			}
		case <-c.dirty:
			c.reconcile(ctx)
			continue
		}
		c.full = true
		poke(c.dirty)
	}
}

func publishC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

// publishDelay bounds how long a reconcile of touched runs only may put
// off publishing the runs: it changed states, not the set of runs, which
// the inventory's listing and the metrics can see a little later.
const publishDelay = 100 * time.Millisecond

func partEnded(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("agent: %s ended: %w", what, err)
}

func (c *controller) onAssignBatch(b mirror.Batch) {
	a := c.a
	if b.Snapshot {
		c.assigns = map[fileRef]assignment{}
		c.assignsLoaded = true
	}
	for _, ev := range b.Events {
		k, err := a.cfg.Space.Parse(ev.KV.Key)
		if err != nil || k.Kind != keyspace.KindAssign || k.Agent != a.cfg.ID {
			a.log.Warn("ignoring unparsable assignment key", "key", ev.KV.Key, "err", err)
			continue
		}
		ref := fileRef{k.Topic, k.File}
		if ev.Type == mirror.Delete {
			delete(c.assigns, ref)
			continue
		}
		var v protocol.Assignment
		if err := protocol.Unmarshal(ev.KV.Key, ev.KV.Value, &v); err != nil {
			a.log.Error("ignoring undecodable assignment", "key", ev.KV.Key, "err", err)
			delete(c.assigns, ref)
			continue
		}
		c.assigns[ref] = assignment{key: ev.KV.Key, createRev: ev.KV.CreateRevision, value: v}
	}
}

// onSnapshot takes the inventory's new snapshot, and reports whether the
// runs must all be looked at again. A scan every --scan-interval that
// found what the one before found changes nothing for runs that exist
// (only a run's creation reads the snapshot's file), so at 10,000 quiet
// files it costs no reconcile of them all.
func (c *controller) onSnapshot(s *snapshot) (full bool) {
	prev := c.snap
	c.snap = s
	full = prev == nil || len(s.changed) > 0 || !maps.Equal(prev.refused, s.refused) || c.waiting()
	for ref, path := range s.changed {
		// A finished rotated file grew again, or a parked file changed
		// and no directory event said so: read on from what was
		// acknowledged.
		fr := c.runs[ref]
		switch {
		case fr == nil:
		case fr.state == stateFinished:
			fr.setPath(path)
			fr.to(stateIdle)
		case fr.state == stateParked:
			fr.setPath(path)
			c.wakeParked(fr, "scan")
		}
	}
	return full
}

// waiting reports whether an assigned file has no run yet (it waits for a
// scan to find it here) or a run waits to start again (its tailer failed,
// or its release): the snapshot may be what it waits for.
func (c *controller) waiting() bool {
	for ref := range c.assigns {
		if _, ok := c.runs[ref]; !ok {
			return true
		}
	}
	for _, fr := range c.runs {
		if fr.state == stateIdle {
			return true
		}
	}
	return false
}

// reconcile starts, stops and releases tailers so they match the desired
// runs: all of them after an input changed, else the touched ones only.
func (c *controller) reconcile(ctx context.Context) {
	// A poke with nothing touched (a release's retry timer) looks at all.
	full, touched := c.full || len(c.touched) == 0, c.touched
	c.full, c.touched = false, map[fileRef]bool{}
	defer c.releaseReserved()
	if c.fenced || !c.assignsLoaded {
		c.publish()
		return
	}
	now := time.Now()
	if !full {
		c.a.m.reconciles.WithLabelValues("runs").Inc()
		for _, ref := range slices.SortedFunc(maps.Keys(touched), compareRefs) {
			fr := c.runs[ref]
			as, ok := c.assigns[ref]
			if fr == nil || !ok || as.createRev != fr.createRev {
				c.full = true // not a run's own change: look at everything
				continue
			}
			c.reconcileRun(ctx, ref, desiredOne(ref, as, c.topics, c.snap), now)
		}
		if c.full {
			poke(c.dirty)
		}
		if c.publishAt == nil {
			c.publishAt = time.NewTimer(publishDelay)
		}
		return
	}
	c.a.m.reconciles.WithLabelValues("all").Inc()
	wants := desired(c.assigns, c.topics, c.snap)
	// Runs whose assignment vanished (or was recreated: a new create
	// revision is a new fence) stop at once and write nothing more.
	for ref, fr := range c.runs {
		if w, ok := wants[ref]; ok && w.createRev == fr.createRev {
			continue
		}
		if fr.state == stateReleasing {
			continue // the release Txn will fail its guard and report back
		}
		c.a.log.Info("assignment gone without release; stopping at once", "topic", fr.topic, "path", fr.pathNow(), "file", fr.key)
		c.drop(fr)
	}
	for _, ref := range slices.SortedFunc(maps.Keys(wants), compareRefs) {
		c.reconcileRun(ctx, ref, wants[ref], now)
	}
	if c.publishAt != nil {
		c.publishAt.Stop()
		c.publishAt = nil
	}
	c.publish()
}

// reconcileRun starts, stops or releases the run of ref to match w.
func (c *controller) reconcileRun(ctx context.Context, ref fileRef, w want, now time.Time) {
	fr := c.runs[ref]
	switch w.kind {
	case wantRelease:
		if fr == nil {
			// Never read here: released without a checkpoint.
			fr = newFileRun(ref.topic, ref.file, w.assignKey, w.createRev, c.assigns[ref].value.Path, protocol.FileIdentity{}, &noConfig)
			c.held.claim(ref)
			c.runs[ref] = fr
		}
		if fr.state != stateReleasing && !now.Before(fr.retryAt) {
			c.release(fr)
		}
	case wantPause:
		if fr != nil && fr.state == stateTailing {
			c.stopTailer(fr) // keep the assignment and checkpoint; resume later
		}
	case wantTail:
		if fr == nil {
			if !w.known {
				return // not discovered here (yet): nothing to read from
			}
			fr = newFileRun(ref.topic, ref.file, w.assignKey, w.createRev, w.file.Path, w.file.Identity, c.config(ref.topic, w))
			fr.size = w.file.Size
			c.held.claim(ref)
			c.runs[ref] = fr
			c.a.origins.add(fr)
		}
		c.takeHeld(fr)
		if fr.state == stateTailing && fr.cfgRev != w.cfgRev {
			// The config key was written again: restart with it if its
			// content changed (comparing only when the revision moved).
			if sameConfig(*fr.cfg, w.cfg) {
				fr.cfgRev = w.cfgRev
			} else {
				c.stopTailer(fr) // restarted just below with the new config
			}
		}
		if fr.state == stateIdle && !now.Before(fr.retryAt) && c.a.starts.take(fr) {
			// The tailer goroutine reads fr.cfg: it changes only while none runs.
			fr.cfg, fr.cfgRev = c.config(ref.topic, w), w.cfgRev
			c.startTailer(ctx, fr)
		}
	}
}

// noConfig is the config of a run released without being read here.
var noConfig topics.Config

type sharedConfig struct {
	rev int64
	cfg *topics.Config
}

// config is w's topic config, shared with the topic's other runs of the
// same revision: a run's config is never modified.
func (c *controller) config(topic string, w want) *topics.Config {
	if s, ok := c.configs[topic]; ok && s.rev == w.cfgRev {
		return s.cfg
	}
	cfg := w.cfg
	c.configs[topic] = sharedConfig{rev: w.cfgRev, cfg: &cfg}
	return &cfg
}

func compareRefs(x, y fileRef) int {
	return cmp.Or(cmp.Compare(x.topic, y.topic), cmp.Compare(x.file, y.file))
}

// publish hands the runs to the checkpointer and a view of them to the
// inventory.
func (c *controller) publish() {
	v := &runView{loaded: c.assignsLoaded && !c.fenced, assigned: map[fileRef]bool{}, runs: make(map[fileRef]runInfo, len(c.runs))}
	for ref, as := range c.assigns {
		v.assigned[ref] = as.value.State == protocol.StateActive
	}
	list := make([]*fileRun, 0, len(c.runs))
	tailing, parked := 0, 0
	for ref, fr := range c.runs {
		ri := runInfo{fr: fr, state: fr.state, since: fr.since, path: fr.pathNow()}
		switch fr.state {
		case stateTailing:
			tailing++
		case stateParked:
			parked++
			ri.parkedEnd = fr.park.end
		}
		v.runs[ref] = ri
		list = append(list, fr)
	}
	c.inv.setView(v)
	c.cp.setRuns(list)
	c.a.m.tailers.Set(float64(tailing))
	c.a.m.parked.Set(float64(parked))
	c.a.m.queued.Set(float64(c.a.starts.queuedLen()))
}

// startTailer runs fr's tailer in its own goroutine.
func (c *controller) startTailer(ctx context.Context, fr *fileRun) {
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	fr.cancel, fr.done = cancel, done
	fr.to(stateTailing)
	go func() {
		err := c.a.tail(tctx, fr)
		c.a.starts.give(fr) // if not at the file's end already
		// Whatever ended it: a context left uncancelled stays among its
		// parent's children, one more for every start of a parked file.
		cancel()
		if errors.Is(err, tailer.ErrGone) || errors.Is(err, tailer.ErrMismatch) {
			// Its content replaced, or its path another file's before it
			// could be opened: a copy may hold it (copies.go). Set before
			// anything waits on done.
			fr.rewritten.Store(true)
			c.a.scanner.Forget(fr.identity)
		}
		// done closes before the exit is reported: halt waits on it from
		// the controller, which may not be receiving exits meanwhile.
		close(done)
		select {
		case c.tailerExits <- tailerExit{fr: fr, err: err, done: done}:
		case <-ctx.Done():
		}
	}()
}

// takeHeld hands an idle run the descriptor the directory watcher holds
// for its file, if any and if the run has none.
func (c *controller) takeHeld(fr *fileRun) {
	if fr.state != stateIdle || fr.held != nil {
		return
	}
	if h := c.held.take(fr.ref()); h != nil {
		fr.held = h.fd
		fr.setPath(h.Path)
	}
}

// halt stops fr's tailer, if one runs, and waits for it to return.
func (c *controller) halt(fr *fileRun) {
	if fr.cancel == nil {
		return
	}
	fr.cancel()
	<-fr.done
	fr.cancel = nil
}

// haltAll stops every tailer: all are told first, then waited for.
func (c *controller) haltAll() {
	for _, fr := range c.runs {
		if fr.cancel != nil {
			fr.cancel()
		}
	}
	for _, fr := range c.runs {
		c.halt(fr)
		if fr.state == stateTailing {
			fr.to(stateIdle)
		}
	}
}

// stopTailer stops fr's tailer; the run stays, idle.
func (c *controller) stopTailer(fr *fileRun) {
	c.halt(fr)
	fr.to(stateIdle)
}

// drop stops fr at once and fences it: nothing more is written for it.
func (c *controller) drop(fr *fileRun) {
	c.halt(fr)
	fr.to(stateFenced)
	fr.closeHeld()
	if c.runs[fr.ref()] == fr {
		delete(c.runs, fr.ref())
		c.a.origins.remove(fr)
		c.held.unclaim(fr.ref())
		if c.a.local != nil {
			// The file is another's now (or assigned anew): etcd has the
			// offset that counts.
			c.a.local.Delete(fr.topic, fr.key)
		}
	}
	c.a.m.bytesBehind.DeleteLabelValues(fr.topic, fr.key)
}

func (c *controller) onTailerExit(ex tailerExit) {
	a := c.a
	fr := ex.fr
	if fr.state != stateTailing || fr.done != ex.done {
		return // stopped on purpose (perhaps restarted since)
	}
	fr.cancel = nil
	err := ex.err
	switch {
	case errors.Is(err, context.Canceled):
		fr.to(stateIdle)
	case errors.Is(err, tailer.ErrInactive):
		c.onParked(fr)
	case errors.Is(err, tailer.ErrFinished):
		// Listed a while longer (finishedGrace); the checkpointer writes
		// its end meanwhile.
		fr.to(stateFinished)
	case errors.Is(err, tailer.ErrGone):
		fr.to(stateGone)
		c.probs.add(fr.topic, fr.pathNow(), "rewritten", err.Error())
		c.inv.triggerScan()
	case (errors.Is(err, tailer.ErrMismatch) || errors.Is(err, fs.ErrNotExist)) && c.held.has(fr.ref()):
		// Its name now holds another file, or none, but the directory
		// watcher opened it in time: read it through that descriptor.
		fr.to(stateIdle)
	case errors.Is(err, tailer.ErrMismatch), errors.Is(err, fs.ErrNotExist):
		// Deleted (or replaced) before it could be opened: what it held
		// past the checkpoint is lost. Count it, never silently; the last
		// size a scan saw is what the file held.
		fr.to(stateGone)
		c.lost.countIfAny(fr.ref(), fr.pathNow(), fr.lastSize()-fr.ackedOffset(), fmt.Sprintf("deleted before they were shipped: %v", err))
		c.inv.triggerScan()
	default:
		fr.to(stateIdle)
		fr.retryAt = time.Now().Add(a.cfg.ScanInterval)
		c.probs.add(fr.topic, fr.pathNow(), discovery.KindUnreadable, err.Error())
		a.log.Error("tailer failed; retrying at the next scan", "topic", fr.topic, "path", fr.pathNow(), "err", err)
	}
	c.probs.write()
}

// onFenced stops the runs whose checkpoint guard failed.
func (c *controller) onFenced(frs []*fileRun) {
	for _, fr := range frs {
		if c.runs[fr.ref()] != fr || fr.state == stateReleasing {
			continue // gone already, or its release will fail its guard
		}
		c.a.m.fencedOut.Inc()
		c.drop(fr)
	}
}

// stop ends every run for the clean stop: tailers first, then the releases
// in progress, which get until deadline to finish.
func (c *controller) stop(deadline time.Time) {
	c.haltAll()
	done := make(chan struct{})
	go func() {
		c.releasing.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Until(deadline)):
		c.a.log.Warn("stop: releases still waiting for Kafka or etcd; giving up on them")
		c.releaseCancel()
		<-done
	}
	c.releaseCancel()
	for _, fr := range c.runs {
		fr.closeHeld()
	}
	for _, w := range c.oldWatch {
		<-w.done
	}
	if c.watch != nil {
		<-c.watch.ended.done
	}
}

// runList is the runs, for the final checkpoint.
func (c *controller) runList() []*fileRun {
	return slices.Collect(maps.Values(c.runs))
}

// onSlotsFreed hands the start slots given back to the runs that wait
// for one (reserved for them), and reports whether there were any.
func (c *controller) onSlotsFreed() bool {
	next := c.a.starts.next(func(fr *fileRun) bool { return c.runs[fr.ref()] == fr && fr.state == stateIdle })
	for _, fr := range next {
		c.touched[fr.ref()] = true
	}
	c.reserved = append(c.reserved, next...)
	c.a.m.queued.Set(float64(c.a.starts.queuedLen()))
	return len(next) > 0
}

// releaseReserved gives back the slots reserved for runs that the
// reconcile did not start (their topic paused meanwhile, the agent
// fenced, a retry not due): the next runs of the queue get them.
func (c *controller) releaseReserved() {
	for _, fr := range c.reserved {
		if fr.state != stateTailing {
			c.a.starts.give(fr)
		}
	}
	c.reserved = c.reserved[:0]
}
