package coordinator

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// compactTimeout bounds one Compact request.
const compactTimeout = 30 * time.Second

// compactLoop compacts etcd's history while this term lasts, the way
// kube-apiserver does: every CompactInterval it compacts to the revision it
// saw one interval earlier, so watchers and paginated lists always have at
// least an interval of history behind them. etcd keeps every revision
// until compacted and its own auto-compaction is off by default; a fleet
// that checkpoints often would otherwise grow history by megabytes a
// second until the quota stops every write. Only the leader compacts
// (Compact cannot be fenced, but two compactions to past revisions do no
// harm); a revision already compacted by someone else is skipped.
func (t *term) compactLoop(ctx context.Context) error {
	iv := t.c.cfg.CompactInterval
	if iv <= 0 {
		return nil
	}
	tick := time.NewTicker(iv)
	defer tick.Stop()
	var prev int64
	for {
		rev, err := t.currentRevision(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			t.log.Warn("compaction: cannot read the current revision", "err", err)
		default:
			if prev > 0 {
				t.compact(ctx, prev)
			}
			prev = rev
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (t *term) currentRevision(ctx context.Context) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, txnTimeout)
	defer cancel()
	resp, err := t.c.cfg.Client.Get(rctx, t.l.Key, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

func (t *term) compact(ctx context.Context, rev int64) {
	cctx, cancel := context.WithTimeout(ctx, compactTimeout)
	defer cancel()
	start := time.Now()
	_, err := t.c.cfg.Client.Compact(cctx, rev)
	switch {
	case err == nil:
		t.c.m.compactions.Inc()
		t.c.m.compactedRevision.Set(float64(rev))
		t.log.Info("compacted etcd history", "revision", rev, "took", time.Since(start))
	case errors.Is(err, rpctypes.ErrCompacted):
		t.log.Debug("compaction skipped: revision already compacted", "revision", rev)
	case ctx.Err() != nil:
	default:
		t.c.m.compactionErrors.Inc()
		t.log.Warn("compaction failed", "revision", rev, "err", err)
	}
}
