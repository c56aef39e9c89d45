package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
)

func (c *coord) stateLists() float64 { return testToFloat(c.m.stateLists) }

// listCounter counts the range requests a client makes under a prefix:
// the pages of a list.
type listCounter struct {
	clientv3.KV
	prefix string
	n      atomic.Int64
}

func countLists(cli *clientv3.Client, prefix string) *listCounter {
	l := &listCounter{KV: cli.KV, prefix: prefix}
	cli.KV = l
	return l
}

func (l *listCounter) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if strings.HasPrefix(key, l.prefix) {
		l.n.Add(1)
	}
	return l.KV.Get(ctx, key, opts...)
}

// localFleet writes the local topic logs with n agents of files files each
// (no leases: they never need to expire) and returns every file's owner.
func localFleet(t *testing.T, cli *clientv3.Client, n, files int) map[string]string {
	t.Helper()
	putTopic(t, cli, "logs", localCfg)
	want := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("h%04d", i)
		fs := fileKeys(id+"-f", files)
		_, err := cli.Put(context.Background(), ks.Heartbeat("logs", id), heartbeatValue(t, id, fs))
		require.NoError(t, err)
		for _, f := range fs {
			want[f] = id
		}
	}
	return want
}

// waitOwners waits until the local topic's active assignments are want.
func waitOwners(t *testing.T, cli *clientv3.Client, want map[string]string) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("%d files assigned", len(want)), func() bool {
		got, settled := owners(t, cli, "logs")
		return settled && maps.Equal(got, want)
	})
}

// joinNewcomer adds the agent newcomer with files files to the local topic
// and waits until they are assigned, with every file of want.
func joinNewcomer(t *testing.T, cli *clientv3.Client, want map[string]string, files int) {
	t.Helper()
	fs := fileKeys("new-f", files)
	_, err := cli.Put(context.Background(), ks.Heartbeat("logs", "newcomer"), heartbeatValue(t, "newcomer", fs))
	require.NoError(t, err)
	for _, f := range fs {
		want[f] = "newcomer"
	}
	waitOwners(t, cli, want)
}

// A standby follows the whole state (/topics/, /assign/, /offsets/): when
// it takes over, its term lists nothing (not one range request under
// /assign/ after the standby's own first list) and still plans at once: a
// newcomer's files are assigned, and nothing already assigned moves.
func TestTakeoverListsNothingAndAssignsANewcomer(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	// 3,000 assignments: a list of /assign/ is several pages.
	want := localFleet(t, admin, 300, 10)
	c1 := startCoord(t, e, "c1", withTTL(30*time.Second))
	waitLeader(t, c1)
	waitOwners(t, admin, want)

	cli2 := e.Client()
	lists := countLists(cli2, ks.AssignPrefix())
	c2 := startCoord(t, e, "c2", withClient(cli2), withTTL(30*time.Second))
	testenv.WaitFor(t, 10*time.Second, "the standby's first list", func() bool { return c2.stateLists() == 1 })
	pages := lists.n.Load()
	require.GreaterOrEqual(t, pages, int64(3), "the standby listed /assign/ in pages")
	before := readAssign(t, admin, "logs")

	c1.stop() // resigns: c2 leads at once
	testenv.WaitFor(t, 5*time.Second, "c2 to take over", c2.IsLeader)
	joinNewcomer(t, admin, want, 10)

	require.Equal(t, pages, lists.n.Load(), "the new term listed /assign/")
	require.Equal(t, 1.0, c2.stateLists(), "one list in c2's life: the standby's first")
	require.Equal(t, 10.0, c2.counter("assigned"), "only the newcomer's files were assigned")
	require.Zero(t, c2.movedTotal())
	after := readAssign(t, admin, "logs")
	for k, v := range before {
		require.Equal(t, v, after[k], "%s unchanged by the failover", k)
	}
}

// A term plans only from a State that holds every write of the leader
// before it. Here the standby's watch of /assign/ is held back after a
// re-list, so its State misses the old leader's last assignments when it
// takes over: the new term waits (no pass, no write) until the watch has
// caught up, then plans, and nothing conflicts or moves.
func TestTakeoverWaitsUntilTheStateHoldsTheOldLeadersWrites(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	checkOwners := startOwnerCheck(t, admin)
	want := localFleet(t, admin, 20, 5)
	c1 := startCoord(t, e, "c1", withTTL(30*time.Second))
	waitLeader(t, c1)
	waitOwners(t, admin, want)

	cli2 := e.Client()
	faults := testenv.InjectWatchFaults(cli2)
	c2 := startCoord(t, e, "c2", withClient(cli2), withTTL(30*time.Second))
	testenv.WaitFor(t, 10*time.Second, "the standby's first list", func() bool { return c2.stateLists() == 1 })

	// Break the standby's watches and hold back the new one of /assign/:
	// the standby re-lists, then sees no assignment change.
	release := faults.HoldKeys(func(key string) bool { return key == ks.AssignPrefix() })
	defer release()
	calls := faults.Calls()
	faults.BreakAll()
	testenv.WaitFor(t, 5*time.Second, "the standby's re-list and held watch", func() bool {
		return c2.stateLists() == 2 && faults.Calls() >= calls+2
	})
	// The old leader assigns a newcomer's files, unseen by the standby.
	joinNewcomer(t, admin, want, 5)

	c1.stop()
	testenv.WaitFor(t, 5*time.Second, "c2 to take over", c2.IsLeader)
	require.Never(t, func() bool { return c2.counter("reconciles") > 0 }, 500*time.Millisecond, 10*time.Millisecond,
		"the new term planned from a State that lacks the old leader's writes")
	release()
	testenv.WaitFor(t, 10*time.Second, "the new leader to reconcile", func() bool { return c2.counter("reconciles") >= 1 })
	require.Zero(t, testToFloat(c2.m.conflicts), "no write planned from the stale State")
	require.Zero(t, c2.counter("assigned"))
	require.Zero(t, c2.movedTotal())
	require.Equal(t, 2.0, c2.stateLists(), "caught up through the watch, not a list")
	got, settled := owners(t, admin, "logs")
	require.True(t, settled)
	require.Equal(t, want, got)
	checkOwners()
}

// Exact progress notifications arrived with etcd 3.4.25 and 3.5.8; older
// releases, and anything unparsable, make a new term list instead.
func TestEtcdProgressInOrder(t *testing.T) {
	for v, want := range map[string]bool{
		"3.4.23": false, "3.4.25": true, "3.4.31": true, "3.5.7": false, "3.5.8": true,
		"3.6.0": true, "3.7.3": true, "3.6.0-alpha.0": true, "4.0.0": true, "2.3.8": false,
		"3.3.27": false, "": false, "3.5": false, "x.y.z": false,
	} {
		require.Equal(t, want, etcdProgressInOrder(v), v)
	}
}

// fakeStatus answers status requests with a version, or fails them ("").
type fakeStatus struct {
	clientv3.Maintenance
	version string
}

func (f fakeStatus) Status(ctx context.Context, ep string) (*clientv3.StatusResponse, error) {
	if f.version == "" {
		return nil, errors.New("unreachable")
	}
	resp, err := f.Maintenance.Status(ctx, ep)
	if err != nil {
		return nil, err
	}
	resp.Version = f.version
	return resp, nil
}

// A term trusts progress notifications only from an etcd that sends them
// in order; when no member answers, the last answer stands, and with none
// the term lists.
func TestProgressTrustFollowsEtcdVersion(t *testing.T) {
	e := testenv.StartEtcd(t)
	newCoord := func(version string) (*Coordinator, *clientv3.Client) {
		cli := e.Client()
		real := cli.Maintenance
		cli.Maintenance = fakeStatus{Maintenance: real, version: version}
		c, err := New(Config{Client: cli, Space: ks, ID: "c", Registerer: newRegistry(), Logger: testLogger(t)})
		require.NoError(t, err)
		return c, cli
	}
	ctx := context.Background()

	c, cli := newCoord("3.5.13")
	ok, _ := c.progressInOrder(ctx)
	require.True(t, ok)
	cli.Maintenance = fakeStatus{Maintenance: cli.Maintenance, version: ""}
	ok, _ = c.progressInOrder(ctx)
	require.True(t, ok, "no answer: the last one stands")

	old, _ := newCoord("3.4.23")
	ok, why := old.progressInOrder(ctx)
	require.False(t, ok)
	require.Contains(t, why, "3.4.23")

	silent, _ := newCoord("")
	ok, why = silent.progressInOrder(ctx)
	require.False(t, ok)
	require.Contains(t, why, "no etcd member answered")
}
