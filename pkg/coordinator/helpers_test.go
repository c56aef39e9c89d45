package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/assign"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var ks = keyspace.Space{}

const sharedCfg = `{"paths":["/shared/*.log"],"shared":true}`

// testLogger logs to the test output when -v is given, else nowhere.
func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() && os.Getenv("COORDINATOR_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// coord is one coordinator under test.
type coord struct {
	*Coordinator
	cli  *clientv3.Client
	reg  *prometheus.Registry
	stop func() // cancels Run and waits for it; idempotent
	done chan struct{}
}

type option func(*Config)

func withTTL(d time.Duration) option             { return func(c *Config) { c.LeaseTTL = d } }
func withHandoverTimeout(d time.Duration) option { return func(c *Config) { c.HandoverTimeout = d } }
func withClient(cli *clientv3.Client) option     { return func(c *Config) { c.Client = cli } }

// startCoord starts a coordinator on its own client.
func startCoord(t *testing.T, e *testenv.Etcd, id string, opts ...option) *coord {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Client: e.Client(), Space: ks, ID: id, Version: "test",
		LeaseTTL: time.Second, HandoverTimeout: 10 * time.Second,
		ReconcileInterval: 50 * time.Millisecond, ResyncInterval: time.Minute, StatusInterval: time.Second,
		ElectionMinBackoff: 20 * time.Millisecond, ElectionMaxBackoff: 200 * time.Millisecond,
		Logger: testLogger(t).With("coordinator", id), Registerer: reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = c.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("coordinator %s did not stop within 10s", id)
				<-done
			}
			require.NoError(t, runErr)
		})
	}
	t.Cleanup(stop)
	return &coord{Coordinator: c, cli: cfg.Client, reg: reg, stop: stop, done: done}
}

func (c *coord) counter(name string, labels ...string) float64 {
	switch name {
	case "reconciles":
		return testutil.ToFloat64(c.m.reconciles)
	case "assigned":
		return testutil.ToFloat64(c.m.assigned)
	case "moved":
		return testutil.ToFloat64(c.m.moved.WithLabelValues(labels...))
	case "resyncs":
		return testutil.ToFloat64(c.m.resyncs.WithLabelValues(labels...))
	case "handover_timeouts":
		return testutil.ToFloat64(c.m.handoverTimeouts)
	case "leader":
		return testutil.ToFloat64(c.m.leader)
	}
	panic("unknown metric " + name)
}

func (c *coord) movedTotal() float64 {
	var n float64
	for _, r := range []string{"rebalance", "unreported", "topic_removed", "duplicate", "owner_gone", "handover_timeout"} {
		n += c.counter("moved", r)
	}
	return n
}

func waitLeader(t *testing.T, cs ...*coord) *coord {
	t.Helper()
	var leader *coord
	testenv.WaitFor(t, 15*time.Second, "a leader", func() bool {
		for _, c := range cs {
			if c.IsLeader() {
				leader = c
				return true
			}
		}
		return false
	})
	return leader
}

// leaderWatch checks continuously, until stopped, that at most one of the
// coordinators runs a term at any moment: it samples their leader flags
// and their leader gauges every millisecond.
func leaderWatch(t *testing.T, cs ...*coord) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var violations atomic.Int64
	var samples atomic.Int64
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n, g := 0, 0
			for _, c := range cs {
				if c.IsLeader() {
					n++
				}
				if c.counter("leader") == 1 {
					g++
				}
			}
			samples.Add(1)
			if n > 1 || g > 1 {
				violations.Add(1)
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
		require.Zero(t, violations.Load(), "two leaders at once in %d of %d samples", violations.Load(), samples.Load())
		require.Positive(t, samples.Load())
	}
}

// agent is a test agent's presence: its lease and heartbeats.
type agent struct {
	id   string
	sess *concurrency.Session
}

// joinAgent puts agent's heartbeat for topic on a lease of its own (kept
// alive) listing files.
func joinAgent(t *testing.T, cli *clientv3.Client, topic, id string, files []string) *agent {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	require.NoError(t, err)
	t.Cleanup(func() { _ = sess.Close() })
	a := &agent{id: id, sess: sess}
	a.heartbeat(t, cli, topic, files)
	return a
}

func heartbeatValue(t *testing.T, id string, files []string) string {
	hb := protocol.Heartbeat{Agent: id, Version: "test"}
	for _, f := range files {
		hb.Files = append(hb.Files, protocol.SeenFile{Key: f, Path: "/shared/" + f + ".log", Size: 100})
	}
	raw, err := protocol.Marshal(&hb)
	require.NoError(t, err)
	return string(raw)
}

func (a *agent) heartbeat(t *testing.T, cli *clientv3.Client, topic string, files []string) {
	t.Helper()
	_, err := cli.Put(context.Background(), ks.Heartbeat(topic, a.id), heartbeatValue(t, a.id, files), clientv3.WithLease(a.sess.Lease()))
	require.NoError(t, err)
}

// crash ends the agent's lease, as when the host dies: every heartbeat
// goes at once.
func (a *agent) crash(t *testing.T, cli *clientv3.Client) {
	t.Helper()
	a.sess.Orphan()
	_, err := cli.Revoke(context.Background(), a.sess.Lease())
	require.NoError(t, err)
}

func fileKeys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func putTopic(t *testing.T, cli *clientv3.Client, name, cfg string) {
	t.Helper()
	_, err := cli.Put(context.Background(), ks.Topic(name), cfg)
	require.NoError(t, err)
}

// assignKV is one assignment key as stored.
type assignKV struct {
	CreateRev, ModRev int64
	Value             protocol.Assignment
}

// readAssign returns every key under /assign/ (optionally of one topic).
func readAssign(t *testing.T, cli *clientv3.Client, topic string) map[string]assignKV {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.AssignPrefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	out := map[string]assignKV{}
	for _, kv := range resp.Kvs {
		k, err := ks.Parse(string(kv.Key))
		require.NoError(t, err)
		if topic != "" && k.Topic != topic {
			continue
		}
		var v protocol.Assignment
		require.NoError(t, protocol.Unmarshal(string(kv.Key), kv.Value, &v))
		out[string(kv.Key)] = assignKV{CreateRev: kv.CreateRevision, ModRev: kv.ModRevision, Value: v}
	}
	return out
}

// owners returns file -> agent of the active assignments of topic, and
// whether the topic is settled (no revoking key, no file with two keys).
func owners(t *testing.T, cli *clientv3.Client, topic string) (map[string]string, bool) {
	t.Helper()
	out := map[string]string{}
	settled := true
	for key, a := range readAssign(t, cli, topic) {
		k, _ := ks.Parse(key)
		if a.Value.State != protocol.StateActive {
			settled = false
			continue
		}
		if _, dup := out[k.File]; dup {
			settled = false
		}
		out[k.File] = k.Agent
	}
	return out, settled
}

// expected is what pkg/assign computes for topic from what etcd holds now
// (members and their files from the heartbeats, current from /assign/).
func expected(t *testing.T, cli *clientv3.Client, topic string, current map[string]string) map[string]string {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.HeartbeatsPrefix(topic), clientv3.WithPrefix())
	require.NoError(t, err)
	in := assign.Input{Shared: true, Sees: map[string][]string{}, Current: current}
	for _, kv := range resp.Kvs {
		k, err := ks.Parse(string(kv.Key))
		if err != nil {
			continue // junk, which the coordinator ignores too
		}
		var hb protocol.Heartbeat
		require.NoError(t, protocol.Unmarshal(string(kv.Key), kv.Value, &hb))
		in.Members = append(in.Members, k.Agent)
		for _, f := range hb.Files {
			in.Sees[k.Agent] = append(in.Sees[k.Agent], f.Key)
		}
	}
	want, err := assign.Compute(assign.Config{}, in)
	require.NoError(t, err)
	return want
}

// waitConverged waits until topic's assignment in etcd is settled and is a
// fixed point of pkg/assign over the live heartbeats, and returns it.
func waitConverged(t *testing.T, cli *clientv3.Client, topic string, deadline time.Duration) map[string]string {
	t.Helper()
	var got, want map[string]string
	testenv.WaitFor(t, deadline, "assignment of "+topic+" to converge", func() bool {
		var settled bool
		got, settled = owners(t, cli, topic)
		if !settled {
			return false
		}
		want = expected(t, cli, topic, got)
		return maps.Equal(got, want)
	})
	return got
}

// releaser plays the agents' side of a handover: when an assignment of one
// of its agents turns revoking, it writes the final checkpoint and deletes
// the key in one Txn guarded by the key's create revision.
type releaser struct {
	mu       sync.Mutex
	agents   map[string]bool // nil: every agent releases
	released atomic.Int64
}

func startReleaser(t *testing.T, cli *clientv3.Client, agents ...string) *releaser {
	t.Helper()
	r := &releaser{}
	if len(agents) > 0 {
		r.agents = map[string]bool{}
		for _, a := range agents {
			r.agents[a] = true
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ready := make(chan struct{})
	wg.Go(func() {
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), ks.AssignPrefix(), clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		close(ready)
		for resp := range wch {
			for _, ev := range resp.Events {
				if ev.Type != mvccpb.PUT {
					continue
				}
				r.handle(ctx, t, cli, ev.Kv)
			}
		}
	})
	<-ready
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

func (r *releaser) handle(ctx context.Context, t *testing.T, cli *clientv3.Client, kv *mvccpb.KeyValue) {
	k, err := ks.Parse(string(kv.Key))
	if err != nil {
		return
	}
	r.mu.Lock()
	releases := r.agents == nil || r.agents[k.Agent]
	r.mu.Unlock()
	var v protocol.Assignment
	if !releases || protocol.Unmarshal(string(kv.Key), kv.Value, &v) != nil || v.State != protocol.StateRevoking {
		return
	}
	cp, _ := protocol.Marshal(&protocol.Checkpoint{Offset: 42, Path: v.Path, Agent: k.Agent, Updated: time.Now()})
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(string(kv.Key)), "=", kv.CreateRevision)).
		Then(clientv3.OpPut(ks.Offset(k.Topic, k.File), string(cp)), clientv3.OpDelete(string(kv.Key))).Commit()
	if err == nil && resp.Succeeded {
		r.released.Add(1)
	}
}

func (r *releaser) stopReleasing(agent string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents == nil {
		r.agents = map[string]bool{}
	}
	delete(r.agents, agent)
}

// ownerCheck watches /assign/ from now on and checks, at every revision,
// that no file of any topic has two assignment keys.
type ownerCheck struct {
	mu         sync.Mutex
	violations []string
	revisions  int
}

func startOwnerCheck(t *testing.T, cli *clientv3.Client) (check func()) {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.AssignPrefix(), clientv3.WithPrefix())
	require.NoError(t, err)
	keys := map[string]map[string]bool{} // topic/file -> agents
	add := func(key string) {
		k, err := ks.Parse(key)
		if err != nil {
			return
		}
		f := k.Topic + "/" + k.File
		if keys[f] == nil {
			keys[f] = map[string]bool{}
		}
		keys[f][k.Agent] = true
	}
	remove := func(key string) {
		if k, err := ks.Parse(key); err == nil {
			delete(keys[k.Topic+"/"+k.File], k.Agent)
		}
	}
	for _, kv := range resp.Kvs {
		add(string(kv.Key))
	}
	oc := &ownerCheck{}
	verify := func(rev int64) {
		oc.revisions++
		for f, agents := range keys {
			if len(agents) > 1 {
				oc.violations = append(oc.violations, fmt.Sprintf("revision %d: %s held by %v", rev, f, slices.Sorted(maps.Keys(agents))))
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wch := cli.Watch(clientv3.WithRequireLeader(ctx), ks.AssignPrefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	wg.Go(func() {
		for resp := range wch {
			if err := resp.Err(); err != nil && !errors.Is(err, context.Canceled) {
				oc.mu.Lock()
				oc.violations = append(oc.violations, "watch failed: "+err.Error())
				oc.mu.Unlock()
				return
			}
			oc.mu.Lock()
			// Events of one revision are one Txn: check after each.
			for i, ev := range resp.Events {
				if ev.Type == mvccpb.PUT {
					add(string(ev.Kv.Key))
				} else {
					remove(string(ev.Kv.Key))
				}
				if i == len(resp.Events)-1 || resp.Events[i+1].Kv.ModRevision != ev.Kv.ModRevision {
					verify(ev.Kv.ModRevision)
				}
			}
			oc.mu.Unlock()
		}
	})
	return func() {
		t.Helper()
		cancel()
		wg.Wait()
		oc.mu.Lock()
		defer oc.mu.Unlock()
		require.Empty(t, oc.violations, "a file had two owners")
		t.Logf("owner check: %d revisions of /assign/ checked", oc.revisions)
	}
}

func topicStatus(t *testing.T, cli *clientv3.Client, topic string) (protocol.TopicStatus, bool) {
	t.Helper()
	var st protocol.TopicStatus
	resp, err := cli.Get(context.Background(), ks.TopicStatus(topic))
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return st, false
	}
	require.NoError(t, protocol.Unmarshal(ks.TopicStatus(topic), resp.Kvs[0].Value, &st))
	return st, true
}

func coordStatus(t *testing.T, cli *clientv3.Client) (protocol.CoordinatorStatus, bool) {
	t.Helper()
	var st protocol.CoordinatorStatus
	resp, err := cli.Get(context.Background(), ks.CoordinatorStatus())
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return st, false
	}
	require.NoError(t, protocol.Unmarshal(ks.CoordinatorStatus(), resp.Kvs[0].Value, &st))
	return st, true
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func testToFloat(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 5*time.Second, what, cond)
}
