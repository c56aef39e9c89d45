package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nxadm/tail shares one inotify watcher per process, on purpose.
		goleak.IgnoreAnyFunction("github.com/nxadm/tail/watch.(*InotifyTracker).run"),
		goleak.IgnoreAnyFunction("github.com/fsnotify/fsnotify.(*Watcher).readEvents"),
	)
}

const testFP = 32

// env is one test's world: etcd, Kafka, a log directory, and helpers that
// read like the scenario they drive.
type env struct {
	t     *testing.T
	etcd  *testenv.Etcd
	kafka *testenv.Kafka
	cli   *clientv3.Client
	ks    keyspace.Space
	dir   string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, etcd: testenv.StartEtcd(t), kafka: testenv.StartKafka(t), dir: t.TempDir()}
	e.cli = e.etcd.Client()
	return e
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

func (e *env) putTopic(name string, cfg topics.Config) {
	e.t.Helper()
	_, err := topics.NewStore(e.cli, e.ks).Put(e.ctx(), name, cfg)
	require.NoError(e.t, err)
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

// header is the fingerprinted first line every test file starts with; tag
// keeps files with the same lines distinct.
func header(tag string) string {
	h := "# " + tag + " " + strings.Repeat("=", testFP)
	return h[:testFP] + "\n"
}

func (e *env) write(name, s string) {
	e.t.Helper()
	f, err := os.OpenFile(e.path(name), os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	require.NoError(e.t, err)
	_, err = f.WriteString(s)
	require.NoError(e.t, err)
	require.NoError(e.t, f.Close())
}

func (e *env) writeLines(name string, from, to int) {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "%s line %06d\n", name, i)
	}
	e.write(name, b.String())
}

type runningAgent struct {
	a     *Agent
	reg   *prometheus.Registry
	stop  func() error
	id    string
	ship  *ship.Shipper
	errCh chan error
}

type agentOpt func(*Config, *ship.Config)

func (e *env) startAgent(id string, opts ...agentOpt) *runningAgent {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	kcfg := ship.DefaultConfig()
	kcfg.Brokers = e.kafka.Brokers()
	kcfg.Linger = 5 * time.Millisecond
	cfg := Config{
		Client: e.cli, Space: e.ks, ID: id, Version: "test",
		AllowPaths: []string{e.dir}, FingerprintBytes: testFP,
		ScanInterval: 200 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond,
		LeaseTTL: 2 * time.Second, RotatedIdle: 300 * time.Millisecond, StopTimeout: 5 * time.Second,
		// Short, so that every scenario also parks and wakes files.
		CloseInactive: 250 * time.Millisecond,
		Registerer:    reg, Logger: testLogger(id),
	}
	for _, o := range opts {
		o(&cfg, &kcfg)
	}
	sh, err := ship.New(kcfg, reg, cfg.Logger)
	require.NoError(e.t, err)
	cfg.Shipper = sh
	a, err := New(cfg)
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{a: a, reg: reg, id: id, ship: sh, errCh: make(chan error, 1)}
	go func() { ra.errCh <- a.Run(ctx) }()
	stopped := false
	ra.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-ra.errCh:
			return err
		case <-time.After(time.Minute):
			// A hang, not slowness: show where.
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			e.t.Fatal("agent did not stop within a minute")
			return nil
		}
	}
	e.t.Cleanup(func() { _ = ra.stop() })
	return ra
}

// value reads key into v and reports whether the key exists.
func (e *env) value(key string, v protocol.Value) bool {
	e.t.Helper()
	resp, err := e.cli.Get(context.Background(), key)
	require.NoError(e.t, err)
	if len(resp.Kvs) == 0 {
		return false
	}
	require.NoError(e.t, protocol.Unmarshal(key, resp.Kvs[0].Value, v))
	return true
}

// heartbeat returns agent's heartbeat for topic, if any.
func (e *env) heartbeat(topic, agent string) (protocol.Heartbeat, bool) {
	var hb protocol.Heartbeat
	ok := e.value(e.ks.Heartbeat(topic, agent), &hb)
	return hb, ok
}

// listing returns the entry for file key in the heartbeat of topic of the
// first of agents that lists it, and that agent.
func (e *env) listing(topic, key string, agents ...string) (protocol.SeenFile, string, bool) {
	for _, agent := range agents {
		hb, _ := e.heartbeat(topic, agent)
		for _, f := range hb.Files {
			if f.Key == key {
				return f, agent, true
			}
		}
	}
	return protocol.SeenFile{}, "", false
}

// waitSeen waits until agent reports the file name for topic and returns it.
func (e *env) waitSeen(topic, agent, name string) protocol.SeenFile {
	e.t.Helper()
	var found protocol.SeenFile
	testenv.WaitFor(e.t, 10*time.Second, agent+" to report "+name, func() bool {
		hb, ok := e.heartbeat(topic, agent)
		if !ok {
			return false
		}
		for _, f := range hb.Files {
			if f.Path == e.path(name) {
				found = f
				return true
			}
		}
		return false
	})
	return found
}

// assign plays the coordinator: it assigns file f of topic to agent.
func (e *env) assign(topic, agent string, f protocol.SeenFile) string {
	e.t.Helper()
	key := e.ks.Assign(agent, topic, f.Key)
	v, err := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: f.Path, Leader: "test"})
	require.NoError(e.t, err)
	_, err = e.cli.Put(context.Background(), key, string(v))
	require.NoError(e.t, err)
	return key
}

// revoke marks an assignment revoking, as the leader does for a handover.
func (e *env) revoke(key string, f protocol.SeenFile, next string) {
	e.t.Helper()
	v, err := protocol.Marshal(&protocol.Assignment{State: protocol.StateRevoking, Path: f.Path, Leader: "test", Revoking: next})
	require.NoError(e.t, err)
	_, err = e.cli.Put(context.Background(), key, string(v))
	require.NoError(e.t, err)
}

func (e *env) exists(key string) bool {
	resp, err := e.cli.Get(context.Background(), key)
	require.NoError(e.t, err)
	return len(resp.Kvs) > 0
}

func (e *env) checkpoint(topic, file string) (protocol.Checkpoint, bool) {
	var cp protocol.Checkpoint
	ok := e.value(e.ks.Offset(topic, file), &cp)
	return cp, ok
}

func (e *env) records(topic string) []testenv.Record {
	return testenv.ReadAll(e.t, e.kafka.Brokers(), topic)
}

// waitRecords waits until topic holds at least n records.
func (e *env) waitRecords(topic string, n int, within time.Duration) []testenv.Record {
	e.t.Helper()
	var recs []testenv.Record
	testenv.WaitFor(e.t, within, fmt.Sprintf("%d records in %s", n, topic), func() bool {
		recs = e.records(topic)
		return len(recs) >= n
	})
	return recs
}

// byFile groups records by their file header, each group sorted by offset,
// and checks every record's offset header against the file's content.
func (e *env) byFile(recs []testenv.Record) map[string][]testenv.Record {
	e.t.Helper()
	out := map[string][]testenv.Record{}
	for _, r := range recs {
		out[r.Headers["path"]] = append(out[r.Headers["path"]], r)
	}
	for path, rs := range out {
		content, err := os.ReadFile(path)
		if err != nil {
			continue // rotated or deleted: checked by the caller
		}
		for _, r := range rs {
			off, err := strconv.ParseInt(r.Headers["offset"], 10, 64)
			require.NoError(e.t, err)
			require.LessOrEqual(e.t, off+int64(len(r.Value)), int64(len(content)))
			require.Equal(e.t, r.Value, string(content[off:off+int64(len(r.Value))]),
				"record at offset %d of %s is not the file's bytes there", off, path)
		}
	}
	return out
}

// requireEachOnce checks that recs hold want distinct lines (by file and
// offset) and none twice.
func requireEachOnce(t *testing.T, recs []testenv.Record, want int, what string) {
	t.Helper()
	seen, dups := distinctValues(recs)
	require.Equal(t, want, len(seen), what)
	require.Zero(t, dups, "%s: lines read twice", what)
}

// distinctValues returns the set of values and how many duplicates there were.
func distinctValues(recs []testenv.Record) (map[string]int, int) {
	seen := map[string]int{}
	dups := 0
	for _, r := range recs {
		k := r.Headers["file"] + "@" + r.Headers["offset"]
		seen[k]++
		if seen[k] > 1 {
			dups++
		}
	}
	return seen, dups
}

// testLogger discards the agent's logs, or writes them to stderr when
// LOGFERRY_TEST_LOG is set (debugging a failure).
func testLogger(id string) *slog.Logger {
	if os.Getenv("LOGFERRY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test_agent", id)
}
