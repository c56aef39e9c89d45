package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/logferry/logferry/internal/ctxwait"
	"github.com/logferry/logferry/pkg/coordinator/election"
	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/mirror"
)

// maxTxnOps is etcd's default --max-txn-ops: the most compares, and the
// most operations, one Txn may carry.
const maxTxnOps = 128

// maxWritePause bounds the pause between two Txns of one pass (see exec).
const maxWritePause = time.Second

// pendingTimeout: a write the mirror has not shown for this long is
// assumed lost to the watch; the leader re-lists. Never expected.
const pendingTimeout = 10 * time.Second

// term is one leadership term: a mirror of /topics/, /assign/ and
// /offsets/ queueing batches, and a throttled reconciler that applies them
// to its State, plans and writes fenced Txns.
//
// The State, the pending writes and the planner belong to the reconciler
// goroutine alone: the mirror only queues batches (never blocked by a slow
// plan), and since batches are applied by the goroutine that also records
// pending writes, no batch can land between a Txn and its bookkeeping.
type term struct {
	c       *Coordinator
	l       election.Leadership
	log     *slog.Logger
	planner *plan.Planner
	status  *statusWriter

	dirty     chan struct{} // capacity 1: "a batch is queued"
	resyncReq chan struct{} // capacity 1: "re-list now"

	qmu   sync.Mutex // guards queue, snapGen and needGen
	queue []queued
	// snapGen counts the mirror (re)starts; needGen is the start whose
	// snapshot the reconciler waits for (after a write whose outcome is
	// unknown it must see a list made after the write).
	snapGen, needGen int64

	// Owned by the reconciler goroutine.
	state   *plan.State
	listing bool  // a list is being applied: the state is incomplete
	haveGen int64 // the start whose snapshot is applied
	// pending are this term's writes not yet seen through the mirror, by
	// key: the reconciler plans only from a State that holds all of them.
	pending map[string]pendingWrite
	last    *pass // the last plan, for status refreshes
	ret     *retention
}

type queued struct {
	b   mirror.Batch
	gen int64
}

type pendingWrite struct {
	rev  int64 // the Txn's revision
	del  bool
	when time.Time
}

type pass struct {
	p     *plan.Plan
	rev   int64
	start time.Time
	dur   time.Duration
}

func newTerm(c *Coordinator, l election.Leadership) *term {
	// The planner is the coordinator's: its rings are warm (kept by the
	// standby, or by an earlier term); the rest it forgets.
	c.planner.Reset()
	log := c.log.With("term", l.Rev)
	t := &term{
		c: c, l: l, log: log, planner: c.planner,
		status:    newStatusWriter(c, l, log),
		dirty:     make(chan struct{}, 1),
		resyncReq: make(chan struct{}, 1),
		state:     plan.NewState(c.cfg.Space),
		needGen:   1,
		pending:   map[string]pendingWrite{},
	}
	t.ret = newRetention(t)
	return t
}

func (t *term) run(ctx context.Context) error {
	t.log.Info("leader term started", "leader_key", t.l.Key)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return t.mirrorLoop(gctx) })
	g.Go(func() error { return t.reconcileLoop(gctx) })
	g.Go(func() error { return t.compactLoop(gctx) })
	return g.Wait()
}

func (t *term) markDirty() {
	select {
	case t.dirty <- struct{}{}:
	default:
	}
}

// requestResync makes the mirror re-list and the reconciler wait for that
// snapshot.
func (t *term) requestResync() {
	t.qmu.Lock()
	t.needGen = t.snapGen + 1
	t.qmu.Unlock()
	select {
	case t.resyncReq <- struct{}{}:
	default:
	}
}

// mirrorLoop runs the mirror, restarting it (a full re-list) whenever a
// resync is requested, and every ResyncInterval if set.
//
// The mirror keeps nothing (WithoutState): the State decodes what it needs
// and keeps that, and is rebuilt from every list, which arrives page by
// page, so a list never holds more than a page of values at once. A
// million keys kept by the mirror as well cost about 60 bytes each, and a
// list handed over whole held every value of it at once. /offsets/ is
// listed keys-only: planning and status need only which checkpoints
// exist, and a million checkpoint values are hundreds of megabytes to read.
func (t *term) mirrorLoop(ctx context.Context) error {
	ks := t.c.cfg.Space
	var periodic <-chan time.Time
	if iv := t.c.cfg.ResyncInterval; iv > 0 {
		tick := time.NewTicker(iv)
		defer tick.Stop()
		periodic = tick.C
	}
	for {
		t.qmu.Lock()
		t.snapGen++
		gen := t.snapGen
		t.qmu.Unlock()
		m, err := mirror.New(t.c.cfg.Client, []string{ks.TopicsPrefix(), ks.AssignPrefix(), ks.OffsetsPrefix()},
			mirror.WithLogger(t.log),
			mirror.WithoutState(), mirror.WithKeysOnly(ks.OffsetsPrefix()),
			mirror.WithBackoff(50*time.Millisecond, 2*time.Second),
			mirror.WithResyncHook(func(reason string) {
				t.c.m.resyncs.WithLabelValues(resyncReason(reason)).Inc()
			}))
		if err != nil {
			return err
		}
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- m.Run(mctx, func(b mirror.Batch) error {
				t.qmu.Lock()
				t.queue = append(t.queue, queued{b: b, gen: gen})
				t.qmu.Unlock()
				t.markDirty()
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
		case <-t.resyncReq:
			reason = resyncWrite
		}
		cancel()
		<-done
		t.c.m.resyncs.WithLabelValues(reason).Inc()
		t.log.Debug("re-listing", "reason", reason)
	}
}

// drain applies every queued batch to the state. It reports whether any
// could change a plan.
func (t *term) drain() bool {
	t.qmu.Lock()
	q := t.queue
	t.queue = nil
	t.qmu.Unlock()
	relevant := false
	for _, e := range q {
		if t.apply(e.b, e.gen) {
			relevant = true
		}
	}
	return relevant
}

// apply applies one batch. A list comes page by page (mirror.WithoutState):
// the first page resets the state, and until the last one the state is
// incomplete (listing), so nothing is planned from it.
func (t *term) apply(b mirror.Batch, gen int64) bool {
	if b.Snapshot {
		t.state.Reset()
		t.listing = true
	}
	relevant := b.Snapshot || b.Resync
	for _, ev := range b.Events {
		if t.state.Apply(ev) {
			relevant = true
		}
		t.observed(ev)
	}
	t.state.SetRevision(b.Revision)
	if t.listing && !b.Partial {
		t.listing = false
		// A list at b.Revision holds every write made at or before it.
		for k, p := range t.pending {
			if p.rev <= b.Revision {
				delete(t.pending, k)
			}
		}
		t.haveGen = max(t.haveGen, gen)
	}
	return relevant
}

// observed clears the pending write that ev shows. Events of one key come
// in revision order, so an event at or after the write's revision (or, for
// a delete, the delete itself) means the state now reflects the write.
func (t *term) observed(ev mirror.Event) {
	p, ok := t.pending[ev.KV.Key]
	if !ok {
		return
	}
	switch {
	case ev.Type == mirror.Put && ev.KV.ModRevision >= p.rev,
		ev.Type == mirror.Delete && (p.del || ev.KV.ModRevision >= p.rev):
		delete(t.pending, ev.KV.Key)
	}
}

// fit reports whether the state may be planned from: a snapshot taken
// after any write of unknown outcome is applied, and every write of this
// term is visible in it. Planning from a state that lacks one of our own
// writes could, say, give a file a second owner.
func (t *term) fit() bool {
	t.qmu.Lock()
	need := t.needGen
	t.qmu.Unlock()
	if t.haveGen < need || t.listing {
		return false
	}
	if len(t.pending) == 0 {
		return true
	}
	var oldest time.Time
	for _, p := range t.pending {
		if oldest.IsZero() || p.when.Before(oldest) {
			oldest = p.when
		}
	}
	if time.Since(oldest) > pendingTimeout {
		t.log.Warn("own writes not seen through the watch; re-listing", "pending", len(t.pending))
		clear(t.pending)
		t.requestResync()
	}
	return false
}

func (t *term) reconcileLoop(ctx context.Context) error {
	interval := t.c.cfg.ReconcileInterval
	statusTick := time.NewTicker(t.c.cfg.StatusInterval)
	defer statusTick.Stop()
	deadline := time.NewTimer(time.Hour)
	deadline.Stop()
	defer deadline.Stop()
	var last time.Time // end of the last pass
	want, statusDue := true, false
	// The checkpoint lifecycle sweeps on this goroutine, between passes,
	// from the State the passes plan from (retention.go).
	var sweepC <-chan time.Time
	if t.ret.enabled() {
		sweepTick := time.NewTicker(t.ret.tick())
		defer sweepTick.Stop()
		sweepC = sweepTick.C
	}
	sweepDue := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.dirty:
		case <-deadline.C:
			want = true
		case <-statusTick.C:
			statusDue = true
		case <-sweepC:
			sweepDue = true
		}
		if t.drain() {
			want = true
		}
		if sweepDue && t.fit() {
			sweepDue = false
			if err := t.ret.sweep(ctx, t.state, time.Now()); err != nil {
				return err
			}
		}
		if !want || !t.fit() {
			if statusDue && t.last != nil {
				statusDue = false
				if err := t.status.write(ctx, t.last.p, t.last.rev, t.last.start, t.last.dur); err != nil {
					return err
				}
			}
			continue
		}
		// Throttle, counting from the end of the last pass so the mirror
		// always gets time to catch up: a burst of events piles up in the
		// queue and is handled by one pass.
		if wait := interval - time.Since(last); wait > 0 {
			tm := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				tm.Stop()
				return nil
			case <-tm.C:
			}
		}
		select {
		case <-t.dirty:
		default:
		}
		t.drain()
		if !t.fit() {
			continue
		}
		next, err := t.reconcile(ctx)
		last = time.Now()
		want, statusDue = false, false
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, election.ErrLost):
			return err
		case err != nil:
			t.log.Warn("reconcile failed; re-listing before the next pass", "err", err)
			want = true
		}
		deadline.Stop()
		if !next.IsZero() {
			deadline.Reset(max(time.Until(next), 0))
		}
	}
}

// reconcile plans from the state and writes the differences and status.
// It returns the next handover deadline.
func (t *term) reconcile(ctx context.Context) (time.Time, error) {
	start := time.Now()
	p, err := t.planner.Plan(t.state, start)
	if err != nil {
		return time.Time{}, fmt.Errorf("plan: %w", err)
	}
	rev := t.state.Revision()
	t.c.rings.request(p.Rings)
	t.c.rings.observe(p.RingSyncs)
	t.damped(p)
	werr := t.exec(ctx, p.Groups)
	dur := time.Since(start)
	t.last = &pass{p: p, rev: rev, start: start, dur: dur}
	t.c.m.reconciles.Inc()
	t.c.m.reconcileDuration.Observe(dur.Seconds())
	t.c.m.pending.Set(float64(p.Pending))
	t.c.m.invalidTopics.Set(float64(p.InvalidTopics))
	t.c.m.junkKeys.Set(float64(len(p.Junk)))
	t.c.m.capped.Set(float64(p.Capped))
	t.log.Debug("reconciled", "revision", rev, "groups", len(p.Groups), "pending_handovers", p.Pending,
		"members", p.Members, "files", p.Files, "topics_skipped", p.Skipped, "duration", dur)
	if p.Capped > 0 {
		t.log.Info("pass full: the rest is left for the next pass", "files_changed", len(p.Groups), "files_left", p.Capped, "duration", dur)
	}
	if werr != nil {
		return p.NextDeadline, werr
	}
	if err := t.status.write(ctx, p, rev, start, dur); err != nil {
		return p.NextDeadline, err
	}
	return p.NextDeadline, nil
}

// exec writes the groups in Txns of at most maxTxnOps compares and
// operations, each guarded by the leader key. Between two Txns it waits as
// long as the last one took (at most maxWritePause): a pass of thousands
// of Txns (a cold start, a mass move) then takes at most half of etcd's
// time, and the lease renewals of the fleet and of this very leader,
// which wait behind the writes, still get through. On a quick etcd the
// pauses are milliseconds.
func (t *term) exec(ctx context.Context, groups []plan.Group) error {
	var batch []plan.Group
	nc, no := 1, 0
	for _, g := range groups {
		if len(batch) > 0 && (nc+len(g.Cmps) > maxTxnOps || no+len(g.Ops) > maxTxnOps) {
			start := time.Now()
			if err := t.commit(ctx, batch); err != nil {
				return err
			}
			if !ctxwait.Sleep(ctx, min(time.Since(start), maxWritePause)) {
				return ctx.Err()
			}
			batch, nc, no = batch[:0], 1, 0
		}
		batch = append(batch, g)
		nc += len(g.Cmps)
		no += len(g.Ops)
	}
	if len(batch) > 0 {
		return t.commit(ctx, batch)
	}
	return nil
}

// commit writes batch in one Txn; if a file's guard fails (etcd changed
// under the plan), it writes each group on its own so the others still
// land, and counts the conflicts.
func (t *term) commit(ctx context.Context, batch []plan.Group) error {
	ok, rev, err := t.txn(ctx, batch)
	if err != nil {
		return err
	}
	if ok {
		t.applied(batch, rev)
		return nil
	}
	if len(batch) == 1 {
		t.conflict(batch[0])
		return nil
	}
	for i := range batch {
		ok, rev, err := t.txn(ctx, batch[i:i+1])
		if err != nil {
			return err
		}
		if ok {
			t.applied(batch[i:i+1], rev)
		} else {
			t.conflict(batch[i])
		}
	}
	return nil
}

// txn commits the groups under the leader guard. It reports ErrLost when
// the leader key is gone or replaced, and any other failure of the request
// after asking for a re-list (the outcome is unknown).
func (t *term) txn(ctx context.Context, groups []plan.Group) (bool, int64, error) {
	cmps := []clientv3.Cmp{t.l.Guard()}
	var ops []clientv3.Op
	for _, g := range groups {
		cmps = append(cmps, g.Cmps...)
		ops = append(ops, g.Ops...)
	}
	tctx, cancel := context.WithTimeout(ctx, txnTimeout)
	defer cancel()
	resp, err := t.c.cfg.Client.Txn(tctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(t.l.Key)).Commit()
	if err != nil {
		if ctx.Err() != nil {
			return false, 0, ctx.Err()
		}
		t.c.m.writeErrors.Inc()
		t.requestResync()
		return false, 0, fmt.Errorf("write %d operations (first %s): %w", len(ops), groups[0].Actions[0].Key, err)
	}
	if resp.Succeeded {
		return true, resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || kvs[0].CreateRevision != t.l.Rev {
		t.log.Error("leader key gone or replaced: stopping leader work", "leader_key", t.l.Key, "revision", resp.Header.Revision)
		return false, 0, fmt.Errorf("%w: leader key %s (create revision %d) no longer holds", election.ErrLost, t.l.Key, t.l.Rev)
	}
	return false, resp.Header.Revision, nil
}

// applied records a committed group: pending writes, metrics, logs.
func (t *term) applied(groups []plan.Group, rev int64) {
	now := time.Now()
	for _, g := range groups {
		for _, a := range g.Actions {
			t.pending[a.Key] = pendingWrite{rev: rev, del: a.Kind == plan.Delete, when: now}
			switch a.Kind {
			case plan.Assign:
				t.c.m.assigned.Inc()
				t.log.Debug("assigned", "topic", g.Topic, "file", g.File, "agent", a.Agent, "revision", rev)
			case plan.Revoke:
				t.c.m.moved.WithLabelValues(a.Reason).Inc()
				t.log.Info("revoked", "topic", g.Topic, "file", g.File, "agent", a.Agent, "next", a.To, "reason", a.Reason, "revision", rev)
			case plan.Delete:
				t.c.m.moved.WithLabelValues(a.Reason).Inc()
				if a.Reason == plan.ReasonHandoverTimeout {
					t.c.m.handoverTimeouts.Inc()
					t.log.Warn("handover timed out: deleted the assignment without a release", "topic", g.Topic, "file", g.File,
						"agent", a.Agent, "next", a.To, "timeout", t.c.cfg.HandoverTimeout, "revision", rev)
				} else {
					t.log.Info("deleted assignment", "topic", g.Topic, "file", g.File, "agent", a.Agent, "next", a.To, "reason", a.Reason, "revision", rev)
				}
			}
		}
	}
}

// damped reports the owner_gone deletions the plan deferred
// (--owner-gone-rate): a gauge every pass, a warning when more are deferred.
func (t *term) damped(p *plan.Plan) {
	t.c.m.goneDeferred.Set(float64(p.GoneDeferred))
	t.c.m.goneInGrace.Set(float64(p.GoneInGrace))
	if p.NewlyDeferred > 0 {
		t.c.m.goneDeferredTotal.Add(float64(p.NewlyDeferred))
		t.log.Warn("agents gone faster than --owner-gone-rate: their assignments stay until the budget allows, or until they return",
			"newly_deferred_files", p.NewlyDeferred, "deferred_files", p.GoneDeferred, "agents", p.GoneAgents,
			"owner_gone_rate", t.c.cfg.OwnerGoneRate)
	}
}

func (t *term) conflict(g plan.Group) {
	t.c.m.conflicts.Inc()
	keys := make([]string, len(g.Actions))
	for i, a := range g.Actions {
		keys[i] = a.Kind.String() + " " + a.Key
	}
	t.log.Info("etcd changed under the plan; the file is planned again from fresher state",
		"topic", g.Topic, "file", g.File, "ops", strings.Join(keys, ", "))
}
