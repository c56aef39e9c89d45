package coordinator

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/coordinator/election"
	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/protocol"
)

// statusWriter keeps /status/coordinator and /status/topics/<P> up to date.
// It writes a key only when its content changed (timestamps aside), and
// /status/coordinator also every StatusInterval so its reconcile time stays
// fresh; every write is fenced by the leader key like any leader write.
type statusWriter struct {
	c   *Coordinator
	l   election.Leadership
	log *slog.Logger

	listed    bool              // the existing topic status keys were read
	written   map[string][]byte // key -> content last written (timestamps zeroed)
	lastCoord time.Time
	reported  map[string]string // topic -> config error last logged
	junk      map[string]bool   // junk keys already logged
}

func newStatusWriter(c *Coordinator, l election.Leadership, log *slog.Logger) *statusWriter {
	return &statusWriter{c: c, l: l, log: log, written: map[string][]byte{}, reported: map[string]string{}, junk: map[string]bool{}}
}

func (w *statusWriter) write(ctx context.Context, p *plan.Plan, rev int64, start time.Time, dur time.Duration) error {
	ks := w.c.cfg.Space
	w.logProblems(p)
	if !w.listed {
		// Statuses of topics that vanished while no leader ran must go too.
		resp, err := w.c.cfg.Client.Get(ctx, ks.TopicStatusPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return fmt.Errorf("list %s: %w", ks.TopicStatusPrefix(), err)
		}
		for _, kv := range resp.Kvs {
			w.written[string(kv.Key)] = nil
		}
		w.listed = true
	}
	now := time.Now()
	var ops []clientv3.Op
	next := map[string][]byte{}
	keep := map[string]bool{}
	for _, st := range p.Topics {
		key := ks.TopicStatus(st.Topic)
		keep[key] = true
		st.Leader = w.c.cfg.ID
		content := must(protocol.Marshal(&st))
		if bytes.Equal(content, w.written[key]) {
			continue
		}
		st.Updated = now
		ops = append(ops, clientv3.OpPut(key, string(must(protocol.Marshal(&st)))))
		next[key] = content
	}
	for key := range w.written {
		if key != ks.CoordinatorStatus() && !keep[key] {
			ops = append(ops, clientv3.OpDelete(key))
			next[key] = nil
		}
	}
	cs := protocol.CoordinatorStatus{
		Leader: w.c.cfg.ID, Version: w.c.cfg.Version, LeaderSince: w.l.Since,
		Topics: len(p.Topics), InvalidTopics: p.InvalidTopics, Members: p.Members, Files: p.Files,
		Assignments: p.Assignments, PendingHandovers: p.Pending, JunkCount: len(p.Junk),
	}
	cs.JunkKeys = p.Junk[:min(len(p.Junk), protocol.MaxStatusList)]
	content := must(protocol.Marshal(&cs))
	ckey := ks.CoordinatorStatus()
	if !bytes.Equal(content, w.written[ckey]) || now.Sub(w.lastCoord) >= w.c.cfg.StatusInterval {
		cs.Updated, cs.LastReconcile, cs.LastReconcileSeconds, cs.Revision = now, start, dur.Seconds(), rev
		ops = append(ops, clientv3.OpPut(ckey, string(must(protocol.Marshal(&cs)))))
		next[ckey] = content
	}
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		tctx, cancel := context.WithTimeout(ctx, txnTimeout)
		resp, err := w.c.cfg.Client.Txn(tctx).If(w.l.Guard()).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Status is best effort: the next pass writes it again.
			w.log.Warn("write status failed", "err", err)
			return nil
		}
		if !resp.Succeeded {
			return fmt.Errorf("%w: status write refused: leader key %s no longer holds", election.ErrLost, w.l.Key)
		}
		ops = ops[n:]
	}
	for key, content := range next {
		if content == nil {
			delete(w.written, key)
		} else {
			w.written[key] = content
		}
	}
	if _, ok := next[ckey]; ok {
		w.lastCoord = now
	}
	return nil
}

// logProblems logs each invalid config and junk key once, when it appears.
func (w *statusWriter) logProblems(p *plan.Plan) {
	seen := map[string]bool{}
	for _, st := range p.Topics {
		if st.State != protocol.TopicInvalid {
			continue
		}
		seen[st.Topic] = true
		if w.reported[st.Topic] != st.Error {
			w.reported[st.Topic] = st.Error
			w.log.Warn("invalid topic config: its assignments are left untouched", "topic", st.Topic, "err", st.Error)
		}
	}
	for topic := range w.reported {
		if !seen[topic] {
			delete(w.reported, topic)
		}
	}
	junk := map[string]bool{}
	for _, j := range p.Junk {
		junk[j.Key] = true
		if !w.junk[j.Key] {
			w.log.Warn("ignoring key", "key", j.Key, "err", j.Error)
		}
	}
	w.junk = junk
}

// must returns an encoded status value; a struct of plain fields always
// encodes.
func must(b []byte, err error) []byte {
	if err != nil {
		panic(fmt.Sprintf("marshal status: %v", err))
	}
	return b
}
