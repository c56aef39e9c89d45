package agent

import (
	"context"
	"maps"
	"os"
	"slices"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/protocol"
)

// maxTxnOps is etcd's default --max-txn-ops: compares and puts of one Txn
// each stay within it.
const maxTxnOps = 128

type due struct {
	fr     *fileRun
	offset int64
	size   int64
}

// checkpoint writes the acknowledged offset of every file whose offset
// moved, in Txns of at most maxTxnOps files, each file's Put guarded by the
// create revision of its assignment key. A Txn whose guards fail is
// retried without the files that were taken away, which stop at once.
func (l *loop) checkpoint(ctx context.Context) {
	var todo []due
	for _, key := range slices.Sorted(maps.Keys(l.runs)) {
		fr := l.runs[key]
		if fr.fenced || fr.releasing || fr.identityUnknown() {
			continue
		}
		l.updateSize(fr)
		off, size, ok := fr.checkpointDue()
		l.a.m.bytesBehind.WithLabelValues(fr.topic, fr.key).Set(float64(max(0, size-off)))
		if ok {
			todo = append(todo, due{fr: fr, offset: off, size: size})
		}
	}
	for len(todo) > 0 && ctx.Err() == nil {
		n := min(len(todo), maxTxnOps)
		batch := todo[:n]
		todo = todo[n:]
		for len(batch) > 0 {
			fenced, err := l.writeCheckpoints(ctx, batch)
			if err != nil {
				l.a.m.checkpointErr.WithLabelValues("etcd").Inc()
				l.a.log.Warn("checkpoint write failed; retrying next interval", "files", len(batch), "err", err)
				break
			}
			if len(fenced) == 0 {
				break
			}
			for _, fr := range fenced {
				l.a.m.checkpointErr.WithLabelValues("fenced").Inc()
				l.a.m.fencedOut.Inc()
				l.a.log.Warn("file taken away (assignment guard failed); stopping it", "topic", fr.topic, "file", fr.key)
				l.abandon(fr)
				delete(l.runs, fr.assignKey)
			}
			batch = slices.DeleteFunc(batch, func(d due) bool { return d.fr.fenced })
		}
	}
}

// writeCheckpoints runs one Txn. On a failed guard it reports which files
// lost their assignment (read in the Else branch, same revision).
func (l *loop) writeCheckpoints(ctx context.Context, batch []due) ([]*fileRun, error) {
	cmps := make([]clientv3.Cmp, 0, len(batch))
	puts := make([]clientv3.Op, 0, len(batch))
	gets := make([]clientv3.Op, 0, len(batch))
	for _, d := range batch {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(d.fr.assignKey), "=", d.fr.createRev))
		puts = append(puts, clientv3.OpPut(l.a.cfg.Space.Offset(d.fr.topic, d.fr.key), string(l.checkpointValue(d.fr, d.offset, d.size))))
		gets = append(gets, clientv3.OpGet(d.fr.assignKey))
	}
	start := time.Now()
	resp, err := l.a.cfg.Client.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	l.a.m.checkpointDur.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		for _, d := range batch {
			d.fr.markWritten(d.offset, d.size)
		}
		return nil, nil
	}
	var fenced []*fileRun
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].CreateRevision != batch[i].fr.createRev {
			fenced = append(fenced, batch[i].fr)
		}
	}
	return fenced, nil
}

func (l *loop) checkpointValue(fr *fileRun, offset, size int64) []byte {
	cp := protocol.Checkpoint{Offset: offset, Identity: fr.identity, Path: fr.path, Agent: l.a.cfg.ID,
		Size: max(size, offset), Updated: time.Now().UTC()}
	data, err := protocol.Marshal(&cp)
	if err != nil {
		l.a.log.Error("encode checkpoint", "err", err)
	}
	return data
}

// updateSize refreshes the file's size; a rotated file keeps its last one.
func (l *loop) updateSize(fr *fileRun) {
	fi, err := os.Stat(fr.path)
	if err != nil {
		return
	}
	fr.mu.Lock()
	// The path may name a newer file after rotation; only a file with our
	// inode says anything about ours.
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Ino == fr.identity.Inode {
		fr.size = fi.Size()
	}
	fr.mu.Unlock()
}

func (f *fileRun) lastSize() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}
