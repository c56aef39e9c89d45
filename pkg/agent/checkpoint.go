package agent

import (
	"cmp"
	"context"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/statefile"
)

// maxTxnOps is etcd's default --max-txn-ops: compares and puts of one Txn
// each stay within it.
const maxTxnOps = 128

// txnTimeout bounds every checkpoint Txn: a slow or unreachable etcd delays
// checkpoints, never anything else.
const txnTimeout = 5 * time.Second

// checkpointer saves the acknowledged offsets of the controller's runs on
// its own goroutine, in two tiers: every CheckpointInterval in the local
// state file (fsynced), and every etcd interval in etcd (sized to the
// fleet, see Config.EtcdCheckpointInterval). Files read to their end go to
// etcd at once. The controller publishes the runs; the checkpointer
// reports back, on Fenced, the runs whose guard failed.
type checkpointer struct {
	a      *Agent
	runs   atomic.Pointer[[]*fileRun]
	fenced chan []*fileRun
	// The checkpointer goroutine's own.
	nextEtcd  time.Time
	fleetSize int // files in the fleet, as the coordinator last said
	// interval is the etcd interval last sized, at sizedAt: the fleet's
	// size changes slowly, and reading it at every round (every 5 s on a
	// small fleet) was a fifth of an idle agent's CPU.
	interval time.Duration
	sizedAt  time.Time
}

func newCheckpointer(a *Agent) *checkpointer {
	c := &checkpointer{a: a, fenced: make(chan []*fileRun, 1)}
	c.runs.Store(&[]*fileRun{})
	return c
}

// setRuns publishes the runs to checkpoint (the controller's, all of them).
func (c *checkpointer) setRuns(runs []*fileRun) { c.runs.Store(&runs) }

// Fenced delivers runs whose assignment guard failed: they were taken away
// and must stop at once.
func (c *checkpointer) Fenced() <-chan []*fileRun { return c.fenced }

// Run checkpoints every CheckpointInterval until ctx is done.
func (c *checkpointer) Run(ctx context.Context) error {
	tick := time.NewTicker(c.a.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if fenced := c.once(ctx); len(fenced) > 0 {
				select {
				case c.fenced <- fenced:
				case <-ctx.Done():
					return nil
				}
			}
		}
	}
}

type due struct {
	fr     *fileRun
	offset int64
	size   int64
}

// once writes the acknowledged offset of every file whose offset (or size)
// moved, in Txns of at most maxTxnOps files, each file's Put guarded by the
// create revision of its assignment key. A Txn whose guards fail is retried
// without the files that were taken away, which it returns.
func (c *checkpointer) once(ctx context.Context) (fenced []*fileRun) {
	return c.pass(ctx, false)
}

// pass saves the local tier, then writes etcd if its round is due (or all
// is set: a clean stop), or only the urgent files otherwise. It looks only
// at the runs marked dirty (fileRun.dirty: something a checkpoint records
// moved) and keeps marked those with something still due; all looks at
// every run. At 10,000 quiet files a pass over every run, every second,
// was a good part of the idle agent's CPU.
func (c *checkpointer) pass(ctx context.Context, all bool) (fenced []*fileRun) {
	a := c.a
	runs := *c.runs.Load()
	alive := a.reg.Alive() // if not, the assignments may be another's by now; the guard would tell, but why ask
	now := time.Now()
	round := alive && (all || a.local == nil || !now.Before(c.nextEtcd))
	if round {
		if c.sizedAt.IsZero() || now.Sub(c.sizedAt) >= resizeEvery {
			c.interval, c.sizedAt = c.etcdInterval(ctx), now
		}
		c.nextEtcd = now.Add(c.interval)
	}
	var todo []due
	for _, fr := range runs {
		if !fr.dirty.Swap(false) && !all {
			continue
		}
		if !fr.writable.Load() || fr.identityUnknown() {
			continue // a state change marks it again
		}
		if a.local != nil {
			c.noteLocal(fr, now)
		}
		// A file acknowledged up to its last seen size is quiet: the scans
		// note its size every --scan-interval (and mark it if it grew).
		if fr.moving() {
			updateSize(fr)
		}
		off, size, ok := fr.checkpointDue()
		c.showBehind(fr, max(0, size-off))
		switch {
		case ok && alive && (round || fr.urgent.Load()):
			todo = append(todo, due{fr: fr, offset: off, size: size})
		case ok:
			fr.dirty.Store(true) // due at a later round (an ack marks it anyway)
		}
	}
	if a.local != nil {
		c.saveLocal() // nothing to do unless an entry changed, here or elsewhere
	}
	// In key order, so that Txns of concurrent passes (a clean stop's
	// final one) lock nothing in a different order; only what is due is
	// sorted, not every run every pass.
	slices.SortFunc(todo, func(x, y due) int { return cmp.Compare(x.fr.assignKey, y.fr.assignKey) })
	for batch := range slices.Chunk(todo, maxTxnOps) {
		for len(batch) > 0 && ctx.Err() == nil {
			lost, err := c.write(ctx, batch)
			if err != nil {
				for _, d := range batch {
					d.fr.dirty.Store(true)
				}
				a.m.checkpointErr.WithLabelValues("etcd").Inc()
				a.log.Warn("checkpoint write failed; retrying next interval", "files", len(batch), "err", err)
				break
			}
			if len(lost) == 0 {
				break
			}
			for _, fr := range lost {
				a.m.checkpointErr.WithLabelValues("fenced").Inc()
				a.log.Warn("file taken away (assignment guard failed); stopping it", "topic", fr.topic, "file", fr.key)
			}
			fenced = append(fenced, lost...)
			batch = slices.DeleteFunc(slices.Clone(batch), func(d due) bool { return slices.Contains(lost, d.fr) })
		}
	}
	return fenced
}

// showBehind sets the file's logagent_file_bytes_behind. The series is
// looked up once and set only when the value moved; a file caught up (0
// behind) has no series: at 10,000 quiet files, a series each was 2.5 MB
// of the agent's heap, and their scrape is most of /metrics.
func (c *checkpointer) showBehind(fr *fileRun, behind int64) {
	if behind == fr.behindShown { // 0 shown: no series
		return
	}
	fr.behindShown = behind
	if behind == 0 {
		if fr.behind != nil {
			c.a.m.bytesBehind.DeleteLabelValues(fr.topic, fr.key)
			fr.behind = nil
		}
		return
	}
	if fr.behind == nil {
		fr.behind = c.a.m.bytesBehind.WithLabelValues(fr.topic, fr.key)
	}
	fr.behind.Set(float64(behind))
}

// write runs one Txn. On a failed guard it reports which files lost their
// assignment (read in the Else branch, same revision).
func (c *checkpointer) write(ctx context.Context, batch []due) ([]*fileRun, error) {
	a := c.a
	cmps := make([]clientv3.Cmp, 0, len(batch))
	puts := make([]clientv3.Op, 0, len(batch))
	gets := make([]clientv3.Op, 0, len(batch))
	for _, d := range batch {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(d.fr.assignKey), "=", d.fr.createRev))
		puts = append(puts, clientv3.OpPut(a.cfg.Space.Offset(d.fr.topic, d.fr.key), string(a.checkpointValue(d.fr, d.offset, d.size))))
		gets = append(gets, clientv3.OpGet(d.fr.assignKey))
	}
	ctx, cancel := context.WithTimeout(ctx, txnTimeout)
	defer cancel()
	start := time.Now()
	resp, err := a.cfg.Client.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
	a.m.checkpointDur.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	if resp.Succeeded {
		for _, d := range batch {
			d.fr.markWritten(d.offset, d.size)
			d.fr.urgent.Store(false)
		}
		a.m.etcdCheckpoints.Add(float64(len(batch)))
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

// noteLocal records fr's offset in the state file if it moved.
func (c *checkpointer) noteLocal(fr *fileRun, now time.Time) {
	if off, ok := fr.localDue(); ok {
		c.a.local.Set(fr.topic, fr.key, statefile.Entry{Offset: off, Identity: fr.identity, Path: fr.pathNow(), Updated: now.UTC()})
		fr.markLocal(off)
	}
}

// saveLocal saves the state file (fsync): the restart of this agent on
// this host resumes from there.
func (c *checkpointer) saveLocal() {
	a := c.a
	start := time.Now()
	if err := a.local.Save(); err != nil {
		a.m.checkpointErr.WithLabelValues("local").Inc()
		a.log.Error("cannot save the local checkpoints; a restart will repeat more lines", "err", err)
		return
	}
	a.m.localSaveDur.Observe(time.Since(start).Seconds())
}

// Bounds of the etcd interval sized to the fleet, and how often it is
// sized again.
const (
	minEtcdInterval = 5 * time.Second
	maxEtcdInterval = 10 * time.Minute
	resizeEvery     = time.Minute
)

// etcdInterval is how long until the next etcd round: the configured
// interval, or the fleet's files over the budget, bounded, so that the
// fleet's checkpoint writes stay near the budget whatever its size.
func (c *checkpointer) etcdInterval(ctx context.Context) time.Duration {
	a := c.a
	iv := a.cfg.EtcdCheckpointInterval
	if iv == 0 {
		if n, ok := c.fleetFiles(ctx); ok {
			c.fleetSize = n
		}
		iv = time.Duration(float64(c.fleetSize) / a.cfg.EtcdCheckpointBudget * float64(time.Second))
		iv = min(max(iv, minEtcdInterval, a.cfg.CheckpointInterval), maxEtcdInterval)
	}
	a.m.etcdInterval.Set(iv.Seconds())
	return iv
}

// fleetFiles is how many files the coordinator last counted in the fleet.
func (c *checkpointer) fleetFiles(ctx context.Context) (int, bool) {
	a := c.a
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	key := a.cfg.Space.CoordinatorStatus()
	resp, err := a.cfg.Client.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, false
	}
	var st protocol.CoordinatorStatus
	if err := protocol.Unmarshal(key, resp.Kvs[0].Value, &st); err != nil {
		return 0, false
	}
	return st.Files, true
}

func (a *Agent) checkpointValue(fr *fileRun, offset, size int64) []byte {
	cp := protocol.Checkpoint{Offset: offset, Identity: fr.identity, Path: fr.pathNow(), Agent: a.cfg.ID,
		Size: max(size, offset), Updated: time.Now().UTC()}
	data, err := protocol.Marshal(&cp)
	if err != nil {
		a.log.Error("encode checkpoint", "err", err)
	}
	return data
}

// updateSize refreshes the file's size; a rotated file keeps its last one.
func updateSize(fr *fileRun) {
	fi, err := os.Stat(fr.pathNow())
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
