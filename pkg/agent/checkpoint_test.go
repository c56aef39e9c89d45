package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
		fk := fmt.Sprintf("f%04d", i)
		key := e.ks.Assign("h1", "t", fk)
		v, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/x"})
		resp, err := e.cli.Put(ctx, key, string(v))
		require.NoError(t, err)
		fr := newFileRun("t", fk, key, resp.Header.Revision, e.path(fk), protocol.FileIdentity{Fingerprint: "ab", Inode: uint64(i)}, topics.Config{})
		fr.started = true
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
	notStarted := newFileRun("t", "fresh", e.ks.Assign("h1", "t", "fresh"), 1, e.path("fresh"), protocol.FileIdentity{Fingerprint: "cd", Inode: 9999}, topics.Config{})
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
