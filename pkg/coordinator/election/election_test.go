package election

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const prefix = "/coordinator/election/"

// candidate is an Elector under test whose term records what it was given
// and checks, on entry, that its leader key really exists.
type candidate struct {
	*Elector
	terms    atomic.Int64
	badTerms atomic.Int64
	inTerm   atomic.Bool
	stop     func()
	mu       sync.Mutex
	last     Leadership
}

func start(t *testing.T, e *testenv.Etcd, id string, ttl time.Duration) *candidate {
	t.Helper()
	cli := e.Client()
	el, err := New(Config{Client: cli, Prefix: prefix, ID: id, TTL: ttl,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Logger: testLogger()})
	require.NoError(t, err)
	c := &candidate{Elector: el}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- el.Run(ctx, func(ctx context.Context, l Leadership) error {
			c.terms.Add(1)
			c.mu.Lock()
			c.last = l
			c.mu.Unlock()
			resp, err := cli.Get(ctx, l.Key)
			if err != nil || len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.Rev || string(resp.Kvs[0].Value) != id {
				c.badTerms.Add(1)
			}
			c.inTerm.Store(true)
			defer c.inTerm.Store(false)
			<-ctx.Done()
			return nil
		})
	}()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	t.Cleanup(c.stop)
	return c
}

func (c *candidate) leadership() Leadership {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func TestConfigValidation(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	for _, cfg := range []Config{
		{Prefix: prefix, ID: "a", TTL: time.Second},
		{Client: cli, Prefix: "/no-slash", ID: "a", TTL: time.Second},
		{Client: cli, Prefix: prefix, TTL: time.Second},
		{Client: cli, Prefix: prefix, ID: "a", TTL: 500 * time.Millisecond},
	} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrConfig)
	}
}

// One leader; the other follows it; a stop resigns and the other takes
// over at once, long before the TTL.
func TestResignHandsOver(t *testing.T) {
	e := testenv.StartEtcd(t)
	a := start(t, e, "a", 30*time.Second)
	testenv.WaitFor(t, 5*time.Second, "a to lead", func() bool { return a.Role() == RoleLeader && a.inTerm.Load() })
	b := start(t, e, "b", 30*time.Second)
	testenv.WaitFor(t, 5*time.Second, "b to follow a", func() bool { return b.Role() == RoleStandby && b.Leader() == "a" })
	require.Zero(t, b.terms.Load())

	begin := time.Now()
	a.stop()
	testenv.WaitFor(t, 5*time.Second, "b to lead", func() bool { return b.Role() == RoleLeader })
	t.Logf("hand-over on resign: %v", time.Since(begin))
	require.Less(t, time.Since(begin), 5*time.Second)
	require.Equal(t, RoleNone, a.Role())
	require.Zero(t, a.badTerms.Load()+b.badTerms.Load())
	resp, err := e.Client().Get(context.Background(), prefix, clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "a left no key behind")
}

// The Campaign trap: a waiting candidate's lease is revoked and, before
// its session notices (keepalives come every TTL/3), the leader resigns.
// Campaign then returns nil with no key held; the elector must not start a
// term on it, and must win later with a new session.
func TestCampaignTrapNoTermWithoutKey(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	a := start(t, e, "a", 30*time.Second)
	testenv.WaitFor(t, 5*time.Second, "a to lead", func() bool { return a.inTerm.Load() })
	b := start(t, e, "b", 30*time.Second)
	var bKey *clientv3.GetResponse
	testenv.WaitFor(t, 5*time.Second, "b to campaign", func() bool {
		resp, err := admin.Get(context.Background(), prefix, clientv3.WithLastCreate()...)
		require.NoError(t, err)
		if len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "b" {
			bKey = resp
			return true
		}
		return false
	})
	lease := clientv3.LeaseID(bKey.Kvs[0].Lease)
	_, err := admin.Revoke(context.Background(), lease)
	require.NoError(t, err)
	a.stop()

	testenv.WaitFor(t, 10*time.Second, "b to lead with a new session", func() bool { return b.inTerm.Load() })
	l := b.leadership()
	require.NotEqual(t, lease, l.Lease)
	require.NotEqual(t, string(bKey.Kvs[0].Key), l.Key)
	require.Equal(t, int64(1), b.terms.Load())
	require.Zero(t, b.badTerms.Load(), "no term ran without its key")
}

// A leader whose key is deleted (lease revoked by someone else) stops its
// term at once, and wins a new one with a new session.
func TestDeletedKeyEndsTerm(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	a := start(t, e, "a", 30*time.Second)
	testenv.WaitFor(t, 5*time.Second, "a to lead", func() bool { return a.inTerm.Load() })
	first := a.leadership()
	begin := time.Now()
	_, err := admin.Revoke(context.Background(), first.Lease)
	require.NoError(t, err)
	testenv.WaitFor(t, 5*time.Second, "a second term", func() bool { return a.terms.Load() == 2 && a.inTerm.Load() })
	t.Logf("second term %v after the revoke (TTL 30s)", time.Since(begin))
	require.Less(t, time.Since(begin), 5*time.Second, "the term ended on the key's deletion, not at a keepalive")
	require.NotEqual(t, first.Key, a.leadership().Key)
	require.Zero(t, a.badTerms.Load())
}

// A term's error ends the term; the elector resigns and campaigns again.
func TestTermErrorResigns(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	el, err := New(Config{Client: cli, Prefix: prefix, ID: "a", TTL: 5 * time.Second,
		MinBackoff: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n atomic.Int64
	keys := make(chan string, 2)
	done := make(chan error, 1)
	go func() {
		done <- el.Run(ctx, func(_ context.Context, l Leadership) error {
			keys <- l.Key
			if n.Add(1) == 2 {
				cancel()
				return nil
			}
			return errors.New("boom")
		})
	}()
	require.NoError(t, <-done)
	k1, k2 := <-keys, <-keys
	require.NotEqual(t, k1, k2, "each term has its own session and key")
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
}

// testLogger logs to stderr when ELECTION_TEST_LOGS is set.
func testLogger() *slog.Logger {
	if os.Getenv("ELECTION_TEST_LOGS") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
