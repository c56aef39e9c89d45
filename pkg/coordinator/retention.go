package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/coordinator/election"
	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/protocol"
)

// This file is the checkpoint lifecycle: the leader deletes the checkpoint
// of a file that is gone, once it has been gone for CheckpointRetention.
//
// Gone means: the file's topic is valid and not paused, no assignment key
// exists for it, no live agent lists it in its heartbeat (agents list a
// rotated or vanished file until a checkpoint covers its size, and count
// the bytes of a deleted unshipped file as lost, so its end was shipped or
// counted), and
//   - on a local topic, the agent that wrote the checkpoint is live (holds
//     a heartbeat under the topic) and lists it no more: a host that is
//     down keeps every checkpoint, however long it stays down;
//   - on a shared topic, the topic has live members.
//
// A heartbeat that does not decode, or that left files out for size, says
// nothing about the files it does not list: its topic (shared) or its
// agent's files (local) are held back.
//
// The reconciler calls sweep every second (tick): every interval it walks
// the State (walk), and every time it deletes what is due, within the
// rate, after checking each file against the State as it is then
// (drain), so the walk's cost is paid rarely and a backlog of deletions
// is spread evenly.
//
// The clock of a file starts when a walk first finds every condition true
// and restarts whenever one is false at a walk, and with every term (the
// clocks live in the leader's memory only; a failover restarts them, which
// only delays deletions). It also restarts when the checkpoint was written
// again meanwhile: the deletion is guarded by the mod revision the leader
// read when the clock started, so a rewrite makes it fail.
//
// Memory: only candidates are kept (checkpoints with no assignment that no
// live agent lists), one small record each; the checkpoints of files that
// are assigned or listed, nearly all of them, cost nothing here.

// DefaultCheckpointRetention is how long a file must have been gone before
// its checkpoint is deleted (see docs/operations.md for the choice).
const DefaultCheckpointRetention = 24 * time.Hour

// DefaultCheckpointDeleteRate bounds checkpoint deletions, in keys per
// second: far above any fleet's rate of rotations, far below what etcd
// takes, so a burst (a topic's globs narrowed over a million files) is
// spread over hours instead of hitting etcd at once.
const DefaultCheckpointDeleteRate = 100

// Reasons a gone-looking checkpoint is held back (label values of
// coordinator_checkpoints_held).
const (
	heldHostDown  = "host_down"  // local topic: the writer has no heartbeat under the topic
	heldNoMembers = "no_members" // shared topic: nobody is live to see the file
	heldUnknown   = "unknown"    // a heartbeat or the checkpoint does not decode, or a heartbeat is truncated
)

var heldReasons = []string{heldHostDown, heldNoMembers, heldUnknown}

// Reasons a deletion's guard failed (label values of
// coordinator_checkpoint_deletions_refused_total).
const (
	refusedRewritten = "rewritten" // the checkpoint was written again (or deleted) since it was read
	refusedAssigned  = "assigned"  // an assignment key exists for the file
)

// maxRetentionReads bounds the checkpoint values one sweep reads (the
// writer of each new candidate), so a sweep never holds the reconciler
// long: the rest are read by the next sweeps.
const maxRetentionReads = 1024

// deletesPerTxn: each deletion takes two compares (its mod revision, the
// writer's assignment key) next to the leader guard, within maxTxnOps.
const deletesPerTxn = (maxTxnOps - 1) / 2

// candidate is one checkpoint that looked gone at the last sweep. 40
// bytes; its map key is the State's own copy of the file key.
type candidate struct {
	since  int64  // unix nanoseconds since every condition held; 0: held back
	modRev int64  // of the checkpoint as read; 0: not read yet
	agent  string // who wrote it (its Agent field)
	epoch  uint32 // the last sweep that found it unassigned
	bad    bool   // its value does not decode: never deleted
}

// retention is one term's checkpoint lifecycle. Only the reconciler
// goroutine uses it, between passes, from the State it plans from: so its
// view of assignments includes every assignment this term wrote.
type retention struct {
	t       *term
	keep    time.Duration
	rate    float64
	cands   map[string]map[string]candidate // topic -> file -> candidate
	epoch   uint32
	walked  time.Time  // the last walk over the State
	queue   []deletion // due at the last walk, the longest gone first
	pending int        // clocks running at the last walk, less those since deleted
	held    map[string]int
	tokens  float64
	last    time.Time // of the last drain, for the token bucket
	summary time.Time // of the last summary log
	deleted int       // since the last summary log
	refused int
}

func newRetention(t *term) *retention {
	return &retention{t: t, keep: t.c.cfg.CheckpointRetention, rate: t.c.cfg.CheckpointDeleteRate,
		cands: map[string]map[string]candidate{}}
}

// enabled reports whether checkpoints are deleted at all.
func (r *retention) enabled() bool { return r.keep > 0 }

// interval is how often the State is walked: an eighth of the retention
// (so a deletion is at most that late), between 100 ms and a minute. A
// walk visits every checkpoint key the State holds, on the reconciler's
// goroutine (BenchmarkRetentionSweep: a few tenths of a second at a
// million files), so it must not run often.
func (r *retention) interval() time.Duration {
	return min(max(r.keep/8, 100*time.Millisecond), time.Minute)
}

// tick is how often the reconciler calls sweep: every second (or
// interval, if shorter) deletions are drained from the queue within the
// rate, so a backlog is spread evenly instead of written in one burst
// per walk; the walk itself runs every interval.
func (r *retention) tick() time.Duration { return min(r.interval(), time.Second) }

// deletion is one checkpoint due for deletion.
type deletion struct {
	topic, file string
	c           candidate
}

// sweep walks st every interval (see walk), then deletes what is due
// and still gone, within the rate. It returns election.ErrLost when a
// guard shows the leadership lost; other errors are logged and the work
// is tried again later.
func (r *retention) sweep(ctx context.Context, st *plan.State, now time.Time) error {
	if r.walked.IsZero() || now.Sub(r.walked) >= r.interval() {
		r.walked = now
		r.walk(ctx, st, now)
	}
	before := r.deleted + r.refused
	err := r.drain(ctx, st, now)
	r.pending -= r.deleted + r.refused - before
	r.t.c.rm.pending.Set(float64(r.pending))
	r.logSummary(now)
	return err
}

// walk finds the gone checkpoints in st, starts, resets and checks their
// clocks, reads the writers of new candidates, and queues those due.
func (r *retention) walk(ctx context.Context, st *plan.State, now time.Time) {
	r.epoch++
	held := map[string]int{}
	pending := 0
	var reads, due []deletion
	for _, name := range st.TopicNames() {
		t := st.Topic(name)
		block, frozen := topicBlock(t)
		if frozen || len(t.Offsets) == 0 {
			delete(r.cands, name)
			continue
		}
		cs := r.cands[name]
		if cs == nil {
			cs = map[string]candidate{}
		}
		for f := range t.Offsets {
			if t.Assigns[f].Len() > 0 {
				continue
			}
			c := cs[f]
			c.epoch = r.epoch
			cs[f] = c
		}
		shared := t.Config.Config.Shared
		if len(cs) > 0 && shared {
			// Any member may list a shared file.
			for _, m := range t.Members {
				for _, f := range m.Keys {
					delete(cs, f)
				}
			}
		}
		for f, c := range cs {
			switch {
			case c.epoch != r.epoch: // assigned now, or its checkpoint is gone
				delete(cs, f)
				continue
			case c.modRev == 0:
				reads = append(reads, deletion{topic: name, file: f})
				continue
			case !shared && listedBy(t, c.agent, f):
				// A local file's key carries its host's id: only its
				// writer can list it, so only the writer's heartbeat is
				// looked at (a walk over every member's files would cost
				// a million lookups a sweep at a million files).
				delete(cs, f)
				continue
			}
			reason := block
			switch {
			case c.bad:
				reason = heldUnknown
			case reason == "" && !shared:
				reason = writerBlock(t, c.agent)
			}
			if reason != "" {
				c.since = 0
				cs[f] = c
				held[reason]++
				continue
			}
			if c.since == 0 {
				c.since = now.UnixNano()
				cs[f] = c
			}
			pending++
			if now.UnixNano()-c.since >= int64(r.keep) {
				due = append(due, deletion{topic: name, file: f, c: c})
			}
		}
		if len(cs) == 0 {
			delete(r.cands, name)
		} else {
			r.cands[name] = cs
		}
	}
	m := r.t.c.rm
	m.sweeps.Inc()
	for _, reason := range heldReasons {
		m.held.WithLabelValues(reason).Set(float64(held[reason]))
	}
	if err := r.read(ctx, reads[:min(len(reads), maxRetentionReads)]); err != nil && ctx.Err() == nil {
		r.t.log.Warn("checkpoint retention: cannot read the writers of gone files' checkpoints; trying again at the next sweep", "err", err)
	}
	slices.SortFunc(due, func(a, b deletion) int { return cmp.Compare(a.c.since, b.c.since) })
	r.queue, r.pending, r.held = due, pending, held
}

// drain deletes the queued checkpoints the rate allows, each checked
// against st first: the walk may be up to an interval old, and the file
// must still be gone now.
func (r *retention) drain(ctx context.Context, st *plan.State, now time.Time) error {
	burst := r.rate * r.tick().Seconds()
	if !r.last.IsZero() {
		r.tokens = min(burst, r.tokens+r.rate*now.Sub(r.last).Seconds())
	}
	r.last = now
	n := min(len(r.queue), int(r.tokens))
	if n == 0 {
		return nil
	}
	take := r.queue[:n]
	r.queue = r.queue[n:]
	var ok []deletion
	for _, d := range take {
		t := st.Topic(d.topic)
		if t == nil || !r.stillGone(t, d) || (t.Config.Config.Shared && listedByAny(t, d.file)) {
			continue
		}
		ok = append(ok, d)
	}
	return r.deleteDue(ctx, ok)
}

// stillGone checks a queued deletion against t as it is now: nothing in
// it may have changed since the walk but the time.
func (r *retention) stillGone(t *plan.Topic, d deletion) bool {
	if block, frozen := topicBlock(t); frozen || block != "" {
		return false
	}
	if _, ok := t.Offsets[d.file]; !ok || t.Assigns[d.file].Len() > 0 {
		return false
	}
	c, ok := r.cands[d.topic][d.file]
	if !ok || c.since == 0 || c.modRev != d.c.modRev {
		return false
	}
	return t.Config.Config.Shared || (writerBlock(t, c.agent) == "" && !listedBy(t, c.agent, d.file))
}

// listedByAny reports whether a member of t lists file: a binary search
// of each member's sorted keys, at most the queued deletions a drain (every
// tick), never a walk of every member's every key.
func listedByAny(t *plan.Topic, file string) bool {
	for _, m := range t.Members {
		if _, ok := m.Path(file); ok {
			return true
		}
	}
	return false
}

// topicBlock reports whether none of t's checkpoints may be deleted now
// (frozen: none is even tracked), or why they are held back ("" if not).
func topicBlock(t *plan.Topic) (reason string, frozen bool) {
	// A topic without a valid config (removed, or invalid) or paused keeps
	// everything as it is, assignments and checkpoints alike.
	if t.Config == nil || t.Config.Err != nil || t.Config.Config.Paused {
		return "", true
	}
	if !t.Config.Config.Shared {
		return "", false
	}
	if len(t.Members) == 0 {
		return heldNoMembers, false
	}
	for _, m := range t.Members {
		if m.Err != nil || m.Truncated > 0 {
			return heldUnknown, false
		}
	}
	return "", false
}

// listedBy reports whether agent's heartbeat under t lists file.
func listedBy(t *plan.Topic, agent, file string) bool {
	m := t.Members[agent]
	if m == nil {
		return false
	}
	_, ok := m.Path(file)
	return ok
}

// writerBlock reports why a local file's checkpoint written by agent is
// held back: its writer is not live under the topic ("" if it is, and
// lists everything it sees).
func writerBlock(t *plan.Topic, agent string) string {
	m := t.Members[agent]
	switch {
	case m == nil:
		return heldHostDown
	case m.Err != nil || m.Truncated > 0:
		return heldUnknown
	}
	return ""
}

// read reads the checkpoints of new candidates, for their writer and mod
// revision, in Txns of at most maxTxnOps reads. A checkpoint gone
// meanwhile is forgotten.
func (r *retention) read(ctx context.Context, todo []deletion) error {
	ks := r.t.c.cfg.Space
	for chunk := range slices.Chunk(todo, maxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, d := range chunk {
			ops[i] = clientv3.OpGet(ks.Offset(d.topic, d.file))
		}
		tctx, cancel := context.WithTimeout(ctx, txnTimeout)
		resp, err := r.t.c.cfg.Client.Txn(tctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("read %d checkpoints (first %s): %w", len(ops), ks.Offset(chunk[0].topic, chunk[0].file), err)
		}
		for i, d := range chunk {
			cs := r.cands[d.topic]
			c, ok := cs[d.file]
			if !ok {
				continue
			}
			kvs := resp.Responses[i].GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				delete(cs, d.file)
				continue
			}
			var cp protocol.Checkpoint
			if err := protocol.Unmarshal(string(kvs[0].Key), kvs[0].Value, &cp); err != nil {
				r.t.log.Warn("checkpoint retention: checkpoint does not decode; it is kept", "key", string(kvs[0].Key), "err", err)
				c.bad = true
			}
			c.modRev, c.agent = kvs[0].ModRevision, cp.Agent
			cs[d.file] = c
		}
	}
	return nil
}

// deleteDue deletes the due checkpoints, each in a Txn guarded by the
// leader key, by the mod revision read when its clock started, and by the
// absence of its writer's assignment key. (Only the leader creates assignment keys, and
// this Txn carries the leader guard: the State, which holds every
// assignment this term wrote, shows none for the file; the compare covers
// the key an agent could have been given by hand.)
func (r *retention) deleteDue(ctx context.Context, due []deletion) error {
	for chunk := range slices.Chunk(due, deletesPerTxn) {
		ok, err := r.txn(ctx, chunk)
		if err != nil {
			return err
		}
		if ok {
			r.done(chunk)
			continue
		}
		if len(chunk) == 1 {
			continue // refused, and counted
		}
		for i := range chunk {
			ok, err := r.txn(ctx, chunk[i:i+1])
			if err != nil {
				return err
			}
			if ok {
				r.done(chunk[i : i+1])
			}
		}
	}
	return nil
}

// done records deleted checkpoints.
func (r *retention) done(ds []deletion) {
	for _, d := range ds {
		delete(r.cands[d.topic], d.file)
		r.t.log.Debug("deleted the checkpoint of a gone file", "topic", d.topic, "file", d.file, "writer", d.c.agent,
			"gone_for", time.Since(time.Unix(0, d.c.since)).Round(time.Second))
	}
	r.tokens -= float64(len(ds))
	r.deleted += len(ds)
	r.t.c.rm.deleted.Add(float64(len(ds)))
}

// txn deletes ds in one Txn. It reports whether it succeeded; a single
// deletion refused by its guard is counted, with its reason, and forgotten
// (read again at the next sweep, its clock restarting).
func (r *retention) txn(ctx context.Context, ds []deletion) (bool, error) {
	ks := r.t.c.cfg.Space
	l := r.t.l
	cmps := []clientv3.Cmp{l.Guard()}
	ops := make([]clientv3.Op, 0, len(ds))
	for _, d := range ds {
		okey := ks.Offset(d.topic, d.file)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(okey), "=", d.c.modRev))
		if d.c.agent != "" {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(ks.Assign(d.c.agent, d.topic, d.file)), "=", 0))
		}
		ops = append(ops, clientv3.OpDelete(okey))
	}
	elseOps := []clientv3.Op{clientv3.OpGet(l.Key)}
	if len(ds) == 1 {
		elseOps = append(elseOps, clientv3.OpGet(ks.Offset(ds[0].topic, ds[0].file)))
	}
	tctx, cancel := context.WithTimeout(ctx, txnTimeout)
	defer cancel()
	resp, err := r.t.c.cfg.Client.Txn(tctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
	if err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		r.t.c.m.writeErrors.Inc()
		// Nothing to re-list: the watch shows whatever happened, and a
		// deletion that did not happen is due again at the next sweep.
		r.t.log.Warn("checkpoint retention: delete failed; trying again at the next sweep",
			"checkpoints", len(ds), "first", ks.Offset(ds[0].topic, ds[0].file), "err", err)
		return false, nil
	}
	if resp.Succeeded {
		return true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 || kvs[0].CreateRevision != l.Rev {
		r.t.log.Error("leader key gone or replaced: stopping leader work", "leader_key", l.Key, "revision", resp.Header.Revision)
		return false, fmt.Errorf("%w: leader key %s (create revision %d) no longer holds", election.ErrLost, l.Key, l.Rev)
	}
	if len(ds) > 1 {
		return false, nil // the caller tries them one by one
	}
	d := ds[0]
	reason := refusedAssigned
	if cur := resp.Responses[1].GetResponseRange().Kvs; len(cur) == 0 || cur[0].ModRevision != d.c.modRev {
		reason = refusedRewritten
	}
	delete(r.cands[d.topic], d.file)
	r.refused++
	r.t.c.rm.refusals.WithLabelValues(reason).Inc()
	r.t.log.Info("checkpoint retention: deletion refused by its guard; the file's clock restarts", "topic", d.topic,
		"file", d.file, "reason", reason, "writer", d.c.agent)
	return false, nil
}

// logSummary logs what the lifecycle did, at most once a minute and only
// when it deleted or was refused something.
func (r *retention) logSummary(now time.Time) {
	if r.deleted+r.refused == 0 || now.Sub(r.summary) < time.Minute {
		return
	}
	args := []any{"deleted", r.deleted, "refused", r.refused, "pending", r.pending, "retention", r.keep}
	for _, reason := range slices.Sorted(maps.Keys(r.held)) {
		args = append(args, "held_"+reason, r.held[reason])
	}
	r.t.log.Info("checkpoint retention: deleted the checkpoints of gone files", args...)
	r.summary, r.deleted, r.refused = now, 0, 0
}
