package coordinator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator/election"
	"github.com/logferry/logferry/pkg/protocol"
)

const localCfg = `{"paths":["/var/log/*.log"]}`

func withRetention(d time.Duration) option {
	return func(c *Config) { c.CheckpointRetention = d }
}

// putCheckpoint writes the checkpoint of file as agent wrote it and
// returns its mod revision.
func putCheckpoint(t *testing.T, cli *clientv3.Client, topic, file, agent string, offset int64) int64 {
	t.Helper()
	raw, err := protocol.Marshal(&protocol.Checkpoint{Offset: offset, Path: "/var/log/" + file + ".log", Agent: agent,
		Size: offset, Identity: protocol.FileIdentity{Fingerprint: "fp-" + file, Inode: 1}})
	require.NoError(t, err)
	resp, err := cli.Put(context.Background(), ks.Offset(topic, file), string(raw))
	require.NoError(t, err)
	return resp.Header.Revision
}

func hasCheckpoint(t *testing.T, cli *clientv3.Client, topic, file string) bool {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.Offset(topic, file))
	require.NoError(t, err)
	return len(resp.Kvs) > 0
}

func checkpointOffset(t *testing.T, cli *clientv3.Client, topic, file string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.Offset(topic, file))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "checkpoint %s/%s", topic, file)
	var cp protocol.Checkpoint
	require.NoError(t, protocol.Unmarshal(string(resp.Kvs[0].Key), resp.Kvs[0].Value, &cp))
	return cp.Offset
}

// localTopicWithH1 starts etcd with the local topic web, where agent h1
// is live and lists f1.
func localTopicWithH1(t *testing.T) (*testenv.Etcd, *clientv3.Client) {
	t.Helper()
	e := testenv.StartEtcd(t)
	cli := e.Client()
	putTopic(t, cli, "web", localCfg)
	joinAgent(t, cli, "web", "h1", []string{"f1"})
	return e, cli
}

// waitSweepsPast waits until the leader swept several times after d more
// has passed: whatever was due by then has been acted on.
func waitSweepsPast(t *testing.T, c *coord, d time.Duration) {
	t.Helper()
	until := time.Now().Add(d)
	var base float64
	testenv.WaitFor(t, d+15*time.Second, fmt.Sprintf("the leader to sweep %v from now", d), func() bool {
		n := testutil.ToFloat64(c.rm.sweeps)
		if time.Now().Before(until) {
			base = n
			return false
		}
		return n >= base+3
	})
}

// TestGoneCheckpointsAreDeletedHostDownKept: on a local topic, the
// checkpoints of files their live writer no longer lists, and nobody
// holds, are deleted after the retention; a file still listed keeps its
// checkpoint; so does every file of a host that is down, however long,
// until it is back.
func TestGoneCheckpointsAreDeletedHostDownKept(t *testing.T) {
	e, cli := localTopicWithH1(t)
	putCheckpoint(t, cli, "web", "f1", "h1", 10)
	putCheckpoint(t, cli, "web", "g1", "h1", 20) // rotated away and shipped
	putCheckpoint(t, cli, "web", "g2", "h1", 30)
	putCheckpoint(t, cli, "web", "x1", "h2", 40) // h2 is down
	putCheckpoint(t, cli, "web", "x2", "h2", 50)
	const retention = time.Second
	c := startCoord(t, e, "c1", withRetention(retention))
	waitLeader(t, c)

	testenv.WaitFor(t, 15*time.Second, "the gone files' checkpoints deleted", func() bool {
		return !hasCheckpoint(t, cli, "web", "g1") && !hasCheckpoint(t, cli, "web", "g2")
	})
	require.Equal(t, 2.0, testutil.ToFloat64(c.rm.deleted))

	waitSweepsPast(t, c, 3*retention)
	require.True(t, hasCheckpoint(t, cli, "web", "f1"), "a listed file keeps its checkpoint")
	require.True(t, hasCheckpoint(t, cli, "web", "x1"), "a down host keeps its checkpoints")
	require.True(t, hasCheckpoint(t, cli, "web", "x2"), "a down host keeps its checkpoints")
	require.Equal(t, 2.0, testutil.ToFloat64(c.rm.held.WithLabelValues(heldHostDown)))
	require.Equal(t, 2.0, testutil.ToFloat64(c.rm.deleted))

	// h2 comes back and lists x1: x1 is its to resume; x2, gone while h2
	// was down, goes once h2 has been back for the retention.
	joinAgent(t, cli, "web", "h2", []string{"x1"})
	testenv.WaitFor(t, 15*time.Second, "x2 deleted once its writer is back", func() bool {
		return !hasCheckpoint(t, cli, "web", "x2")
	})
	waitSweepsPast(t, c, 2*retention)
	require.Equal(t, int64(40), checkpointOffset(t, cli, "web", "x1"))
	require.True(t, hasCheckpoint(t, cli, "web", "f1"))
	require.Equal(t, 3.0, testutil.ToFloat64(c.rm.deleted))
}

// TestSharedTopicWithoutMembersKeepsCheckpoints: a shared topic's files
// count as gone only while someone is live to see them.
func TestSharedTopicWithoutMembersKeepsCheckpoints(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	putTopic(t, cli, "sh", sharedCfg)
	putCheckpoint(t, cli, "sh", "s1", "h1", 10)
	putCheckpoint(t, cli, "sh", "s2", "h2", 20)
	const retention = time.Second
	c := startCoord(t, e, "c1", withRetention(retention))
	waitLeader(t, c)

	waitSweepsPast(t, c, 3*retention)
	require.True(t, hasCheckpoint(t, cli, "sh", "s1"))
	require.True(t, hasCheckpoint(t, cli, "sh", "s2"))
	require.Equal(t, 2.0, testutil.ToFloat64(c.rm.held.WithLabelValues(heldNoMembers)))
	require.Zero(t, testutil.ToFloat64(c.rm.deleted))

	// A member that lists s2 only: s1 is gone.
	joinAgent(t, cli, "sh", "h3", []string{"s2"})
	testenv.WaitFor(t, 15*time.Second, "s1 deleted", func() bool { return !hasCheckpoint(t, cli, "sh", "s1") })
	waitSweepsPast(t, c, 2*retention)
	require.True(t, hasCheckpoint(t, cli, "sh", "s2"))
}

// TestRewrittenCheckpointIsNotDeleted: a checkpoint written again while
// its clock runs is not deleted when the clock it had runs out (the
// deletion's guard on its mod revision refuses); its clock restarts.
func TestRewrittenCheckpointIsNotDeleted(t *testing.T) {
	e, cli := localTopicWithH1(t)
	putCheckpoint(t, cli, "web", "g1", "h1", 20)
	const retention = 3 * time.Second
	c := startCoord(t, e, "c1", withRetention(retention))
	waitLeader(t, c)

	testenv.WaitFor(t, 10*time.Second, "g1's clock to run", func() bool {
		return testutil.ToFloat64(c.rm.pending) == 1
	})
	putCheckpoint(t, cli, "web", "g1", "h1", 25) // an agent wrote it again
	testenv.WaitFor(t, 15*time.Second, "the deletion refused", func() bool {
		return testutil.ToFloat64(c.rm.refusals.WithLabelValues(refusedRewritten)) == 1
	})
	require.Equal(t, int64(25), checkpointOffset(t, cli, "web", "g1"), "the rewritten checkpoint stays")
	require.Zero(t, testutil.ToFloat64(c.rm.deleted))
	// Still gone: deleted after a whole retention of its own.
	testenv.WaitFor(t, 15*time.Second, "g1 deleted after a fresh retention", func() bool {
		return !hasCheckpoint(t, cli, "web", "g1")
	})
}

// TestRetentionOffKeepsEverything: a negative retention (the flag's 0)
// deletes nothing.
func TestRetentionOffKeepsEverything(t *testing.T) {
	e, cli := localTopicWithH1(t)
	putCheckpoint(t, cli, "web", "g1", "h1", 20)
	c := startCoord(t, e, "c1", withRetention(-1))
	waitLeader(t, c)
	waitConverged(t, cli, "web", 10*time.Second)
	require.Zero(t, testutil.ToFloat64(c.rm.sweeps))
	require.True(t, hasCheckpoint(t, cli, "web", "g1"))
}

// TestCheckpointDeletionsAreRateLimited: 40 gone files, a rate of 10 a
// second: between any two looks, no more were deleted than the bucket
// holds (a second's worth at most) plus the rate times the time between.
func TestCheckpointDeletionsAreRateLimited(t *testing.T) {
	e, cli := localTopicWithH1(t)
	const n, rate = 40, 10.0
	for i := range n {
		putCheckpoint(t, cli, "web", fmt.Sprintf("g%02d", i), "h1", 20)
	}
	c := startCoord(t, e, "c1", withRetention(time.Second), func(cfg *Config) { cfg.CheckpointDeleteRate = rate })
	waitLeader(t, c)
	led := time.Now()
	burst := rate * (&retention{keep: time.Second}).tick().Seconds()
	// All 40 are due at once, a retention after the leader's first walk:
	// at any look, no more are deleted than the bucket allows since then,
	// and the last one no sooner than the rate allows after the first.
	var first time.Time
	testenv.WaitFor(t, 30*time.Second, "every gone checkpoint deleted", func() bool {
		now, got := time.Now(), testutil.ToFloat64(c.rm.deleted)
		if got == 0 {
			return false
		}
		if first.IsZero() {
			first = now
		}
		require.LessOrEqual(t, got, burst+1+rate*now.Sub(led).Seconds(), "deleted faster than --checkpoint-delete-rate")
		return got == n
	})
	require.GreaterOrEqual(t, time.Since(first).Seconds(), n/2/rate, "40 deletions spread at the rate (half of it, for the looks' lag)")
}

// retentionOf builds a term's retention for leader key l, without a
// running coordinator: the deletion Txn alone, against a real etcd.
func retentionOf(t *testing.T, cli *clientv3.Client, l election.Leadership) *retention {
	t.Helper()
	reg := newRegistry()
	m, err := newMetrics(reg)
	require.NoError(t, err)
	rm, err := newRetentionMetrics(reg)
	require.NoError(t, err)
	c := &Coordinator{cfg: Config{Client: cli, Space: ks, CheckpointRetention: time.Second, CheckpointDeleteRate: 1}, m: m, rm: rm}
	return newRetention(&term{c: c, l: l, log: testLogger(t)})
}

// TestDeposedLeaderDeletesNoCheckpoint: a deletion carries the leader
// guard: a term whose leader key is gone deletes nothing and ends.
func TestDeposedLeaderDeletesNoCheckpoint(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	rev := putCheckpoint(t, cli, "web", "g1", "h1", 20)
	// A leader key that no longer exists: the term was deposed.
	r := retentionOf(t, cli, election.Leadership{Key: ks.ElectionPrefix() + "694d", Rev: 2})
	_, err := r.txn(context.Background(), []deletion{{topic: "web", file: "g1", c: candidate{modRev: rev, agent: "h1"}}})
	require.ErrorIs(t, err, election.ErrLost)
	require.True(t, hasCheckpoint(t, cli, "web", "g1"))
	require.Zero(t, testutil.ToFloat64(r.t.c.rm.deleted))
}

// TestAssignedCheckpointIsNotDeleted: the deletion's guard refuses while
// the writer holds an assignment key for the file (one given by hand,
// which the leader's State would not show yet).
func TestAssignedCheckpointIsNotDeleted(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	lk := ks.ElectionPrefix() + "694d"
	resp, err := cli.Put(context.Background(), lk, "c1")
	require.NoError(t, err)
	r := retentionOf(t, cli, election.Leadership{Key: lk, Rev: resp.Header.Revision})
	rev := putCheckpoint(t, cli, "web", "g1", "h1", 20)
	_, err = cli.Put(context.Background(), ks.Assign("h1", "web", "g1"), `{"v":1,"state":"active"}`)
	require.NoError(t, err)
	ok, err := r.txn(context.Background(), []deletion{{topic: "web", file: "g1", c: candidate{modRev: rev, agent: "h1"}}})
	require.NoError(t, err)
	require.False(t, ok)
	require.True(t, hasCheckpoint(t, cli, "web", "g1"))
	require.Equal(t, 1.0, testutil.ToFloat64(r.t.c.rm.refusals.WithLabelValues(refusedAssigned)))
	// Without the assignment, the same deletion goes through.
	_, err = cli.Delete(context.Background(), ks.Assign("h1", "web", "g1"))
	require.NoError(t, err)
	ok, err = r.txn(context.Background(), []deletion{{topic: "web", file: "g1", c: candidate{modRev: rev, agent: "h1"}}})
	require.NoError(t, err)
	require.True(t, ok)
	require.False(t, hasCheckpoint(t, cli, "web", "g1"))
}
