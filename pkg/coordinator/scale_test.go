package coordinator

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator/plan"
)

func withCompactInterval(d time.Duration) option { return func(c *Config) { c.CompactInterval = d } }
func withOwnerGoneRate(r float64) option         { return func(c *Config) { c.OwnerGoneRate = r } }

func (c *coord) ringSyncs(kind string) float64 {
	return testToFloat(c.m.ringSyncs.WithLabelValues(kind))
}

// putMembers writes n heartbeats of topic, each listing files, without
// leases (the test never needs them to expire).
func putMembers(t *testing.T, cli *clientv3.Client, topic, prefix string, n int, files []string) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s%03d", prefix, i)
		_, err := cli.Put(context.Background(), ks.Heartbeat(topic, id), heartbeatValue(t, id, files))
		require.NoError(t, err)
	}
}

// waitSettled waits until topic has n active assignments and nothing in
// flight (cheaper than waitConverged, which computes the assignment).
func waitSettled(t *testing.T, cli *clientv3.Client, topic string, n int) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, topic+" settled", func() bool {
		got, settled := owners(t, cli, topic)
		return settled && len(got) == n
	})
}

// The standby follows the state and builds the shared topic's ring while
// the leader leads; when it takes over, its first pass reuses that ring
// (no cold build in the new term) and moves nothing; a later join is an
// incremental ring update.
func TestStandbyKeepsTheRingWarmAcrossFailover(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	startReleaser(t, admin)
	putTopic(t, admin, "web", sharedCfg)
	fs := fileKeys("f", 300)
	// 150 members: a cold ring more than a pass builds itself.
	putMembers(t, admin, "web", "a", 150, fs)
	c1 := startCoord(t, e, "c1", withTTL(30*time.Second))
	waitLeader(t, c1)
	c2 := startCoord(t, e, "c2", withTTL(30*time.Second))
	waitSettled(t, admin, "web", len(fs))
	eventually(t, "the leader's ring built once, off the reconciler", func() bool { return c1.ringSyncs("cold") == 1 })
	eventually(t, "the standby's ring built while it stands by", func() bool { return c2.ringSyncs("cold") == 1 })
	require.False(t, c2.IsLeader())
	require.Zero(t, c2.counter("reconciles"), "the standby plans nothing")
	before := readAssign(t, admin, "")

	c1.stop()
	testenv.WaitFor(t, 5*time.Second, "c2 to take over", c2.IsLeader)
	testenv.WaitFor(t, 5*time.Second, "the new leader to reconcile", func() bool { return c2.counter("reconciles") >= 1 })
	require.Equal(t, before, readAssign(t, admin, ""), "a failover moves nothing")
	require.Equal(t, 1.0, c2.ringSyncs("cold"), "the new term reused the warm ring")

	putMembers(t, admin, "web", "joiner", 1, fs)
	testenv.WaitFor(t, 10*time.Second, "the joiner to get files", func() bool {
		got, settled := owners(t, admin, "web")
		return settled && slices.Contains(slices.Collect(maps.Values(got)), "joiner000")
	})
	require.Equal(t, 1.0, c2.ringSyncs("cold"))
	require.GreaterOrEqual(t, c2.ringSyncs("incremental"), 1.0, "a join updates the ring")
	require.Zero(t, c2.counter("moved", plan.ReasonOwnerGone))
}

// The leader compacts etcd's history to the revision it saw an interval
// before; its own watches go on.
func TestLeaderCompactsHistory(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	putTopic(t, admin, "web", sharedCfg)
	joinAgent(t, admin, "web", "a1", fileKeys("f", 3))
	c := startCoord(t, e, "c1", withCompactInterval(200*time.Millisecond))
	waitLeader(t, c)
	waitConverged(t, admin, "web", 10*time.Second)
	resp, err := admin.Put(context.Background(), "/probe", "1")
	require.NoError(t, err)
	old := resp.Header.Revision
	testenv.WaitFor(t, 10*time.Second, "a compaction past the probe", func() bool {
		return testToFloat(c.m.compactedRevision) >= float64(old)
	})
	_, err = admin.Get(context.Background(), "/probe", clientv3.WithRev(old-1))
	require.ErrorIs(t, err, rpctypes.ErrCompacted, "history before the compacted revision is gone")
	require.Zero(t, testToFloat(c.m.compactionErrors))

	// The leader goes on working after its own compactions.
	startReleaser(t, admin)
	joinAgent(t, admin, "web", "a2", fileKeys("f", 3))
	got := waitConverged(t, admin, "web", 10*time.Second)
	require.Len(t, got, 3)
}

// Without compaction configured off, the default compacts; negative turns
// it off.
func TestCompactIntervalDefaults(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	c, err := New(Config{Client: cli, Space: ks, ID: "x", Registerer: newRegistry(), Logger: testLogger(t)})
	require.NoError(t, err)
	require.Equal(t, DefaultCompactInterval, c.cfg.CompactInterval)
	require.Equal(t, float64(DefaultOwnerGoneRate), c.cfg.OwnerGoneRate)
	c, err = New(Config{Client: cli, Space: ks, ID: "x", Registerer: newRegistry(), Logger: testLogger(t), CompactInterval: -1, OwnerGoneRate: -1})
	require.NoError(t, err)
	require.Negative(t, c.cfg.CompactInterval)
}

// A rack's worth of agents lose their leases at one revision: the leader
// tears down only as many files per second as --owner-gone-rate allows,
// logs and counts the rest, and gets to all of them in time.
func TestMassLeaseLossIsDamped(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	putTopic(t, admin, "logs", `{"paths":["/var/log/*.log"]}`)
	live := 10
	for i := range live {
		id := fmt.Sprintf("live%02d", i)
		joinAgent(t, admin, "logs", id, fileKeys(id+"-", 10))
	}
	rack, err := admin.Grant(context.Background(), 30)
	require.NoError(t, err)
	for i := range 10 {
		id := fmt.Sprintf("rack%02d", i)
		_, err := admin.Put(context.Background(), ks.Heartbeat("logs", id), heartbeatValue(t, id, fileKeys(id+"-", 10)), clientv3.WithLease(rack.ID))
		require.NoError(t, err)
	}
	c := startCoord(t, e, "c1", withOwnerGoneRate(40))
	waitLeader(t, c)
	testenv.WaitFor(t, 10*time.Second, "every file assigned", func() bool { return len(readAssign(t, admin, "logs")) == 200 })

	_, err = admin.Revoke(context.Background(), rack.ID)
	require.NoError(t, err)
	testenv.WaitFor(t, 20*time.Second, "every file of the rack torn down", func() bool {
		return c.counter("moved", plan.ReasonOwnerGone) == 100
	})
	require.Equal(t, 60.0, testToFloat(c.m.goneDeferredTotal), "a budget of 40 files: 4 agents at once, 6 deferred")
	eventually(t, "nothing deferred any more", func() bool { return testToFloat(c.m.goneDeferred) == 0 })
	require.Len(t, readAssign(t, admin, "logs"), 100, "the live agents keep theirs")
}
