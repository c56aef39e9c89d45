package heartbeat

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cli *clientv3.Client, ttl time.Duration) (*Registrar, *prometheus.Registry, func()) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := New(Config{Client: cli, TTL: ttl, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), Registerer: reg, MetricsPrefix: "test"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return r, reg, func() {
		cancel()
		require.NoError(t, <-done)
	}
}

func get(t *testing.T, cli *clientv3.Client, key string) (value string, lease int64, modRev int64, ok bool) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return "", 0, 0, false
	}
	kv := resp.Kvs[0]
	return string(kv.Value), kv.Lease, kv.ModRevision, true
}

func TestKeysLiveOnTheLease(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	r, _, stop := start(t, cli, 2*time.Second)
	r.Set("/topics/t1/a", []byte("v1"))
	r.Set("/status/agents/a", []byte("ok"))
	testenv.WaitFor(t, 5*time.Second, "keys written", func() bool {
		_, _, _, ok1 := get(t, cli, "/topics/t1/a")
		_, _, _, ok2 := get(t, cli, "/status/agents/a")
		return ok1 && ok2 && r.Lease() != 0
	})
	v, lease, rev, _ := get(t, cli, "/topics/t1/a")
	require.Equal(t, "v1", v)
	require.Equal(t, int64(r.Lease()), lease, "the key is attached to the agent's lease")

	// The same value again writes nothing, and keepalives write nothing:
	// after more than a TTL the key still has its first revision.
	r.Set("/topics/t1/a", []byte("v1"))
	// Outlive the TTL: the lease is still there, so keepalives renewed it,
	// and none of them rewrote the key.
	granted := time.Now()
	testenv.WaitFor(t, 10*time.Second, "the lease to outlive its TTL through keepalives", func() bool {
		resp, err := cli.TimeToLive(context.Background(), clientv3.LeaseID(lease))
		require.NoError(t, err)
		require.GreaterOrEqual(t, resp.TTL, int64(0), "lease expired (TTL -1): keepalives are not running")
		return time.Since(granted) > 3*time.Second
	})
	_, _, rev2, _ := get(t, cli, "/topics/t1/a")
	require.Equal(t, rev, rev2, "unchanged value must not be rewritten")

	r.Set("/topics/t1/a", []byte("v2"))
	testenv.WaitFor(t, 5*time.Second, "changed value", func() bool { v, _, _, _ := get(t, cli, "/topics/t1/a"); return v == "v2" })
	r.Delete("/status/agents/a")
	testenv.WaitFor(t, 5*time.Second, "deleted key", func() bool { _, _, _, ok := get(t, cli, "/status/agents/a"); return !ok })

	// A clean stop revokes the lease: the keys go at once, not after the TTL.
	stop()
	_, _, _, ok := get(t, cli, "/topics/t1/a")
	require.False(t, ok, "keys must vanish when the registrar stops")
	require.Equal(t, clientv3.LeaseID(0), r.Lease())
}

func TestLeaseLostReRegisters(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	r, reg, stop := start(t, cli, time.Second)
	defer stop()
	r.Set("/topics/t1/a", []byte("hb"))
	r.Set("/topics/t2/a", []byte("hb"))
	testenv.WaitFor(t, 5*time.Second, "keys written", func() bool { return r.Lease() != 0 })
	old := r.Lease()

	// Revoke the lease behind the registrar's back: etcd deletes the keys.
	_, err := cli.Revoke(context.Background(), old)
	require.NoError(t, err)
	_, _, _, ok := get(t, cli, "/topics/t1/a")
	require.False(t, ok)

	testenv.WaitFor(t, 10*time.Second, "keys written again on a new lease", func() bool {
		_, l1, _, ok1 := get(t, cli, "/topics/t1/a")
		_, l2, _, ok2 := get(t, cli, "/topics/t2/a")
		return ok1 && ok2 && l1 != int64(old) && l1 == l2 && l1 == int64(r.Lease())
	})
	require.Equal(t, 2.0, testutil.ToFloat64(mustCounter(t, reg, "test_lease_grants_total")))
	require.Equal(t, 1.0, testutil.ToFloat64(mustCounter(t, reg, "test_lease_losses_total")))
}

func mustCounter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: "copy"})
			c.Add(mf.GetMetric()[0].GetCounter().GetValue())
			return c
		}
	}
	t.Fatalf("metric %s not found", name)
	return nil
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{TTL: time.Second})
	require.ErrorIs(t, err, ErrConfig)
	_, err = New(Config{Client: &clientv3.Client{}, TTL: 0})
	require.ErrorContains(t, err, "TTL 0s")
}

// TestProofRunsOutBeforeTheLease: once etcd cannot be reached, Alive turns
// false while the lease, and so the keys on it, still exist on the server:
// a holder that stops when Alive turns false stops before anyone can see it
// gone and give its work away. After the split heals, a lease is proved
// alive again.
func TestProofRunsOutBeforeTheLease(t *testing.T) {
	e := testenv.StartEtcd(t)
	direct := e.Client()
	p := testenv.StartProxy(t, e.Endpoint())
	r, _, stop := start(t, e.ClientAt(p.Addr()), 2*time.Second)
	defer stop()
	r.Set("/topics/t1/a", []byte("hb"))
	testenv.WaitFor(t, 5*time.Second, "key written on a proved lease", func() bool { return r.Lease() != 0 && r.Alive() })
	lease := r.Lease()
	select {
	case <-r.Proofs(): // drained: the next poke is news
	default:
	}
	testenv.WaitFor(t, 5*time.Second, "a keepalive to move the proof", func() bool {
		select {
		case <-r.Proofs():
			return true
		default:
			return false
		}
	})

	watch := direct.Watch(context.Background(), "/topics/t1/a")
	p.Cut()
	cut := time.Now()
	testenv.WaitFor(t, 5*time.Second, "the proof to run out", func() bool { return !r.Alive() })
	_, onLease, _, ok := get(t, direct, "/topics/t1/a")
	require.True(t, ok, "the key vanished before the holder knew: it would have worked on after its lease was gone")
	require.Equal(t, int64(lease), onLease)
	require.Zero(t, r.Lease(), "no lease while none is proved alive")
	// The proof runs out by the clock; the renewal that failed says why
	// when its call gives up, which on a loaded machine can come after.
	testenv.WaitFor(t, 10*time.Second, "the failed renewal's error", func() bool { return r.Err() != nil })
	require.ErrorContains(t, r.Err(), p.Addr(), "the error names the endpoint")
	until := r.AliveUntil()
	require.Less(t, until.Sub(cut), 2*time.Second, "proved beyond a TTL after the last answer")
	// The server expires the lease: the proof ran out before that.
	var gone time.Time
	for gone.IsZero() {
		wr := <-watch
		require.NoError(t, wr.Err())
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				gone = time.Now()
			}
		}
	}
	// At least the margin before: the server cannot expire a lease earlier
	// than a TTL after it received the renewal the proof rests on.
	require.GreaterOrEqual(t, gone.Sub(until), 400*time.Millisecond,
		"proved alive until %v, but the lease was gone at %v: less than the margin of a quarter TTL before", until, gone)

	p.Heal()
	testenv.WaitFor(t, 15*time.Second, "a lease proved alive again after the split", func() bool { return r.Lease() != 0 && r.Alive() })
	require.NoError(t, r.Err())
}

// TestStopsAtOnceWhenEtcdIsUnreachable: with nothing listening at the
// endpoint, the registrar says why (naming the endpoint) and returns as
// soon as it is told to stop.
func TestStopsAtOnceWhenEtcdIsUnreachable(t *testing.T) {
	e := testenv.StartEtcd(t)
	dead := testenv.FreeAddr(t)
	r, err := New(Config{Client: e.ClientAt(dead), TTL: 2 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	testenv.WaitFor(t, 15*time.Second, "the error to be known", func() bool { return r.Err() != nil })
	require.ErrorContains(t, r.Err(), dead)
	require.False(t, r.Alive())
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of its context ending while etcd is unreachable")
	}
}
