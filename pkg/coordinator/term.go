package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
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

// progressTimeout: a new term whose State has not been shown current (a
// progress notification at or after the term's first revision) this long
// after it asked re-lists instead. Expected only of an etcd, or a proxy,
// that never answers progress requests.
const progressTimeout = 30 * time.Second

// term is one leadership term: a throttled reconciler that borrows the
// follower's State (kept current by the follower's mirror since long
// before the term, so a term lists nothing), plans and writes fenced Txns.
//
// The State, the pending writes and the planner belong to the reconciler
// goroutine alone: the mirror only queues batches (never blocked by a slow
// plan), and since batches are applied by the goroutine that also records
// pending writes, no batch can land between a Txn and its bookkeeping.
type term struct {
	c       *Coordinator
	f       *follower
	l       election.Leadership
	log     *slog.Logger
	planner *plan.Planner
	status  *statusWriter

	// Owned by the reconciler goroutine.
	state *plan.State // the follower's
	// current is set once the State has been shown to hold every change
	// up to the term's first revision (l.Confirmed); asked is when the
	// term last asked for that.
	current bool
	asked   time.Time
	// pending are this term's writes not yet seen through the mirror, by
	// key: the reconciler plans only from a State that holds all of them.
	pending map[string]pendingWrite
	last    *pass // the last plan, for status refreshes
	ret     *retention
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
		c: c, f: c.follow, l: l, log: log, planner: c.planner,
		status:  newStatusWriter(c, l, log),
		state:   c.follow.state,
		pending: map[string]pendingWrite{},
	}
	t.ret = newRetention(t)
	return t
}

func (t *term) run(ctx context.Context) error {
	t.log.Info("leader term started", "leader_key", t.l.Key, "confirmed_revision", t.l.Confirmed)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return t.reconcileLoop(gctx) })
	g.Go(func() error { return t.compactLoop(gctx) })
	return g.Wait()
}

// requestResync makes the follower re-list and the reconciler wait for that
// list.
func (t *term) requestResync(reason string) { t.f.requestResync(reason) }

// catchUp starts the term's read barrier. Every write of an earlier
// leader is at or below l.Confirmed (its writes need its key, deleted
// before this term's key could lead), so the term plans only from a State
// that holds every change up to there: the follower's mirror is asked for
// a progress notification (answered at the current revision, after every
// change below it), or, with an etcd too old for that to be exact, for a
// fresh list.
func (t *term) catchUp(ctx context.Context) {
	t.asked = time.Now()
	if t.f.synced >= t.l.Confirmed {
		return
	}
	if ok, why := t.c.progressInOrder(ctx); !ok {
		t.log.Warn("etcd's progress notifications cannot be trusted here: the term lists everything instead", "why", why)
		t.requestResync(resyncEtcdVersion)
		return
	}
	t.f.requestProgress()
}

// drain applies every queued batch to the state. It reports whether any
// could change a plan.
func (t *term) drain() bool {
	return t.f.drain(t.observed, t.synced)
}

// synced clears the pending writes the State now holds for sure: every
// change at or below rev is in it.
func (t *term) synced(rev int64) {
	for k, p := range t.pending {
		if p.rev <= rev {
			delete(t.pending, k)
		}
	}
	if !t.current && rev < t.l.Confirmed && t.f.complete() {
		t.f.requestProgress() // an answer older than the term: ask again
	}
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

// fit reports whether the state may be planned from: it holds a whole
// list (one made after any write of unknown outcome), every change up to
// the term's first revision, and every write of this term. Planning from
// a state that lacks one of the leaders' own writes could, say, give a
// file a second owner.
func (t *term) fit() bool {
	if !t.f.complete() {
		return false
	}
	if !t.current {
		if t.f.synced < t.l.Confirmed {
			if time.Since(t.asked) > progressTimeout {
				t.log.Warn("the state was not shown current in time; re-listing", "waited", time.Since(t.asked),
					"synced_revision", t.f.synced, "confirmed_revision", t.l.Confirmed)
				t.asked = time.Now()
				t.requestResync(resyncNoProgress)
			}
			return false
		}
		t.current = true
		t.log.Info("state current: planning", "waited", time.Since(t.l.Since), "revision", t.state.Revision(),
			"synced_revision", t.f.synced)
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
		t.requestResync(resyncWrite)
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
	t.catchUp(ctx)
	t.f.markDirty() // the State may be current already: plan at once
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
		case <-t.f.dirty:
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
		case <-t.f.dirty:
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
		t.requestResync(resyncWrite)
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
