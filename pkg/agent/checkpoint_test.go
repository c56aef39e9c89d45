package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

// TestCheckpointManyFilesAndFencing drives the checkpointer directly:
// 300 files (more than one Txn's 128 operations) are written, and a file
// whose assignment guard fails is reported back and gets nothing written,
// while the others in the same Txn still get theirs.
func TestCheckpointManyFilesAndFencing(t *testing.T) {
	e := newEnv(t)
	ra := e.startAgent("h1")
	testenv.WaitFor(t, 10*time.Second, "a lease proved alive", ra.a.reg.Alive)
	c := newCheckpointer(ra.a)
	var runs []*fileRun
	ctx := context.Background()
	const n = 300
	var stolen *fileRun
	for i := range n {
		fr := assignedRun(t, e, fmt.Sprintf("f%04d", i), uint64(i))
		fr.trackAll(0, []pendingRec{{start: int64(99 + i), end: int64(100 + i)}})
		fr.ack(0)
		runs = append(runs, fr)
		if i == 200 {
			stolen = fr
		}
	}
	// The file is taken away and given back: a new create revision, so the
	// agent's fence no longer holds.
	_, err := e.cli.Delete(ctx, stolen.assignKey)
	require.NoError(t, err)
	v, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/x"})
	_, err = e.cli.Put(ctx, stolen.assignKey, string(v))
	require.NoError(t, err)

	// A file whose tailer has not read its checkpoint yet writes none: it
	// would overwrite the previous owner's with 0.
	notStarted := newFileRun("t", "fresh", e.ks.Assign("h1", "t", "fresh"), 1, e.path("fresh"), protocol.FileIdentity{Fingerprint: "cd", Inode: 9999}, &topics.Config{})
	runs = append(runs, notStarted)
	c.setRuns(runs)

	fenced := c.once(ctx)
	_, wrote := e.checkpoint("t", "fresh")
	require.False(t, wrote, "no checkpoint before the tailer started")
	for i := range n {
		fk := fmt.Sprintf("f%04d", i)
		cp, ok := e.checkpoint("t", fk)
		if fk == stolen.key {
			require.False(t, ok, "nothing may be written for a file whose guard failed")
			continue
		}
		require.True(t, ok, fk)
		require.Equal(t, int64(100+i), cp.Offset)
	}
	require.Equal(t, []*fileRun{stolen}, fenced, "the file whose guard failed is reported back")

	// Unchanged offsets are skipped: a second pass writes nothing.
	before := histogramCount(t, ra.reg, "logagent_checkpoint_duration_seconds")
	stolen.writable.Store(false) // as the controller's drop does
	require.Empty(t, c.once(ctx))
	require.Equal(t, before, histogramCount(t, ra.reg, "logagent_checkpoint_duration_seconds"))
}

// assignedRun puts an active assignment of file fk of topic t to h1 and
// returns a run of it guarded by that assignment, its tailer started.
func assignedRun(t *testing.T, e *env, fk string, inode uint64) *fileRun {
	t.Helper()
	key := e.ks.Assign("h1", "t", fk)
	v, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/x"})
	resp, err := e.cli.Put(context.Background(), key, string(v))
	require.NoError(t, err)
	fr := newFileRun("t", fk, key, resp.Header.Revision, e.path(fk), protocol.FileIdentity{Fingerprint: "ab", Inode: inode}, &topics.Config{})
	fr.started = true
	return fr
}

// TestEtcdIntervalIsSizedToTheFleet: with a state file and no
// --etcd-checkpoint-interval, etcd gets the checkpoints every fleet's files
// / --etcd-checkpoint-budget, between max(5 s, --checkpoint-interval) and
// 10 minutes, so the fleet's etcd write rate stays near the budget
// whatever its size; without a coordinator status the last size stands.
func TestEtcdIntervalIsSizedToTheFleet(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	ra := e.startAgent("h1", func(c *Config, _ *ship.Config) { c.StateDir = dir })
	c := newCheckpointer(ra.a)
	ctx := e.ctx()
	fleet := func(files int) time.Duration {
		v, err := protocol.Marshal(&protocol.CoordinatorStatus{Leader: "c1", Files: files})
		require.NoError(t, err)
		_, err = e.cli.Put(ctx, e.ks.CoordinatorStatus(), string(v))
		require.NoError(t, err)
		return c.etcdInterval(ctx)
	}
	require.Equal(t, minEtcdInterval, c.etcdInterval(ctx), "no status yet: the shortest")
	require.Equal(t, maxEtcdInterval, fleet(10_000_000), "at most 10 minutes")
	require.Equal(t, minEtcdInterval, fleet(1_000), "at least 5 s")
	require.Equal(t, 50*time.Second, fleet(100_000), "100,000 files at 2,000 keys/s")
	_, err := e.cli.Delete(ctx, e.ks.CoordinatorStatus())
	require.NoError(t, err)
	require.Equal(t, 50*time.Second, c.etcdInterval(ctx), "the last size stands while no status is read")
	require.Equal(t, 50.0, metricValue(t, ra.reg, "logagent_etcd_checkpoint_interval_seconds"))
}

// TestCheckpointerLooksOnlyAtRunsThatMoved: a pass looks only at the runs
// whose acknowledged offset, size or state moved since it last looked
// (an idle agent's passes then cost nothing per file); a run with an
// offset due at a later etcd round stays marked until it is written.
func TestCheckpointerLooksOnlyAtRunsThatMoved(t *testing.T) {
	e := newEnv(t)
	ra := e.startAgent("h1", func(c *Config, _ *ship.Config) { c.StateDir = t.TempDir() })
	testenv.WaitFor(t, 10*time.Second, "a lease proved alive", ra.a.reg.Alive)
	c := newCheckpointer(ra.a)
	ctx := context.Background()
	runs := make([]*fileRun, 3)
	for i := range runs {
		fr := assignedRun(t, e, fmt.Sprintf("f%d", i), uint64(i))
		fr.trackAll(0, []pendingRec{{start: 0, end: 10}, {start: 10, end: 20}})
		fr.ack(0)
		fr.size = 20
		runs[i] = fr
	}
	c.setRuns(runs)
	require.Empty(t, c.once(ctx)) // the first round: etcd and the state file
	cp, ok := e.checkpoint("t", "f0")
	require.True(t, ok)
	require.Equal(t, int64(10), cp.Offset)
	require.Equal(t, 3, testutil.CollectAndCount(ra.a.m.bytesBehind), "a series for each file behind")
	require.Equal(t, 10.0, metricValue(t, ra.reg, "logagent_file_bytes_behind", "file", "f1"))
	for _, fr := range runs {
		// Bytes 10-20 are in flight: their ack marks the run.
		require.False(t, fr.dirty.Load(), "%s: written: not looked at again until something moves", fr.key)
	}

	runs[0].ack(1)
	runs[1].ack(1)
	runs[2].ack(1)
	require.Empty(t, c.once(ctx)) // the local tier now, etcd at its next round
	e0, _ := ra.a.local.Get("t", "f0")
	require.Equal(t, int64(20), e0.Offset)
	require.Zero(t, testutil.CollectAndCount(ra.a.m.bytesBehind), "a file caught up has no series")
	require.True(t, runs[0].dirty.Load(), "due in etcd at the next round: still marked")

	c.nextEtcd = time.Time{} // the etcd round is due
	require.Empty(t, c.once(ctx))
	cp, _ = e.checkpoint("t", "f1")
	require.Equal(t, int64(20), cp.Offset)
	for _, fr := range runs {
		require.False(t, fr.dirty.Load(), "%s: written, quiet: not looked at again", fr.key)
	}

	// A change nobody marked is not seen: the pass did not look.
	runs[2].mu.Lock()
	runs[2].acked = 15
	runs[2].mu.Unlock()
	c.nextEtcd = time.Time{}
	require.Empty(t, c.once(ctx))
	cp, _ = e.checkpoint("t", "f2")
	require.Equal(t, int64(20), cp.Offset, "an unmarked run is not looked at")
	runs[2].dirty.Store(true)
	c.nextEtcd = time.Time{}
	require.Empty(t, c.once(ctx))
	cp, _ = e.checkpoint("t", "f2")
	require.Equal(t, int64(15), cp.Offset, "a marked one is")
}

// TestFleetSizeReadOncePerResize: the etcd rounds read the fleet's size
// (the coordinator's status) at most once per resizeEvery, not at every
// round: on a small fleet a round is every 5 s, and each read was a fifth
// of an idle agent's CPU.
func TestFleetSizeReadOncePerResize(t *testing.T) {
	e := newEnv(t)
	var gets *getCounter
	ra := e.startAgent("h1", func(c *Config, _ *ship.Config) {
		c.StateDir = t.TempDir()
		own, err := clientv3.New(clientv3.Config{Endpoints: c.Client.Endpoints(), DialTimeout: 5 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { own.Close() })
		gets = &getCounter{KV: own.KV, prefix: c.Space.CoordinatorStatus()}
		own.KV = gets
		c.Client = own
	})
	testenv.WaitFor(t, 10*time.Second, "a lease proved alive", ra.a.reg.Alive)
	c := newCheckpointer(ra.a)
	ctx := context.Background()
	before := gets.n.Load()
	for range 5 {
		c.nextEtcd = time.Time{} // a round is due
		c.once(ctx)
	}
	require.Equal(t, before+1, gets.n.Load(), "one read for five rounds within a minute")
	c.sizedAt = c.sizedAt.Add(-resizeEvery)
	c.nextEtcd = time.Time{}
	c.once(ctx)
	require.Equal(t, before+2, gets.n.Load(), "read again a minute later")
}
