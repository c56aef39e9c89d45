package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/topics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nxadm/tail/watch.(*InotifyTracker).run"),
		goleak.IgnoreAnyFunction("github.com/fsnotify/fsnotify.(*Watcher).readEvents"),
	)
}

// TestRunServesAndStopsCleanly runs the binary's main in-process: it serves
// readiness and metrics, and a SIGTERM (ctx cancel) stops it with exit 0,
// its lease revoked (heartbeats gone at once), within 10 s.
func TestRunServesAndStopsCleanly(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	e := testenv.StartEtcd(t)
	k := testenv.StartKafka(t)
	cli := e.Client()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.log"), []byte(strings.Repeat("h", 40)+"\nline\n"), 0o644))
	_, err := topics.NewStore(cli, keyspace.Space{}).Put(context.Background(), "t", topics.Config{Paths: []string{dir + "/*.log"}})
	require.NoError(t, err)

	listen := testenv.FreeAddr(t)
	t.Setenv("LOGAGENT_KAFKA_BROKERS", strings.Join(k.Brokers(), ","))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--etcd-endpoints", e.Endpoint(), "--id", "127.0.0.9", "--listen", listen,
			"--allow-path", dir, "--scan-interval", "100ms", "--lease-ttl", "3s", "--fingerprint-bytes", "16", "--state-dir", t.TempDir()},
			io.Discard, &stderr)
	}()
	testenv.WaitFor(t, 10*time.Second, "/readyz 200", func() bool { c, _ := testenv.HTTPGet("http://" + listen + "/readyz"); return c == 200 })
	testenv.WaitFor(t, 10*time.Second, "heartbeat", func() bool {
		resp, err := cli.Get(context.Background(), "/topics/t/127.0.0.9")
		require.NoError(t, err)
		return len(resp.Kvs) == 1
	})
	code, body := testenv.HTTPGet("http://" + listen + "/metrics")
	require.Equal(t, 200, code)
	for _, m := range []string{"logagent_lease_held 1", "logagent_files_seen", "logferry_ship_inflight_bytes", "go_goroutines", "go_gc_gomemlimit_bytes"} {
		require.Contains(t, body, m)
	}
	require.NotContains(t, body, fmt.Sprintf("go_gc_gomemlimit_bytes %g\n", float64(math.MaxInt64)), "the memory target sets a limit")
	require.Zero(t, runtime.MemProfileRate, "no heap samples without --pprof")
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("logagent did not stop within 10 s of SIGTERM")
	}
	t.Logf("stopped in %v", time.Since(start))
	require.Equal(t, int64(math.MaxInt64), debug.SetMemoryLimit(-1), "the limit found is put back")
	resp, err := cli.Get(context.Background(), "/topics/", clientv3.WithPrefix())
	require.NoError(t, err)
	for _, kv := range resp.Kvs {
		require.NotEqual(t, "/topics/t/127.0.0.9", string(kv.Key), "lease revoked on stop: heartbeat gone at once")
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--lease-ttl", "soon"}, "lease-ttl"},
		{[]string{"--kafka-acks", "most"}, "most"},
		{[]string{"--id", "bad id", "--listen", "127.0.0.1:0"}, "--id"},
		{[]string{"--log-level", "loud"}, "loud"},
		{[]string{"--etcd-prefix", "x"}, "--etcd-prefix"},
		{[]string{"stray"}, "stray"},
		{[]string{"--listen", "nonsense", "--id", "a"}, "nonsense"},
		{[]string{"--tail-mode", "fast"}, "fast"},
		{[]string{"--tail-poll-interval", "0s"}, "--tail-poll-interval"},
		{[]string{"--memory-target", "lots"}, "lots"},
		{[]string{"--max-starting-files", "0"}, "--max-starting-files"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		require.Error(t, err, "%v", tc.args)
		require.True(t, errors.Is(err, errUsage), "%v: %v", tc.args, err)
		require.ErrorContains(t, err, tc.want)
	}
	t.Setenv("LOGAGENT_LEASE_TTL", "never")
	err := run(context.Background(), nil, io.Discard, io.Discard)
	require.ErrorContains(t, err, "LOGAGENT_LEASE_TTL")
}

// TestTailDefaults: followed files are watched with inotify by default
// (the low-latency, idle-free mode), polled every 250 ms on request.
func TestTailDefaults(t *testing.T) {
	o, err := parse(nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, "inotify", o.tailMode)
	require.Equal(t, 250*time.Millisecond, o.tailPoll)
}

func TestHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"--help"}, io.Discard, &out)
	require.ErrorIs(t, err, pflag.ErrHelp)
	for _, f := range []string{"--etcd-endpoints", "--kafka-brokers", "--id", "--listen", "--etcd-prefix", "--lease-ttl",
		"--checkpoint-interval", "--allow-path", "--max-inflight-bytes", "--kafka-compression", "--kafka-tls-ca",
		"--kafka-sasl-mechanism", "--etcd-ca", "--etcd-user", "LOGAGENT_ETCD_ENDPOINTS"} {
		require.Contains(t, out.String(), f)
	}
	out.Reset()
	require.NoError(t, run(context.Background(), []string{"--check-config", "--id", "h1", "--etcd-endpoints", "127.0.0.1:1"}, &out, io.Discard))
	require.Contains(t, out.String(), "config ok: id=h1")
	require.ErrorContains(t, run(context.Background(), []string{"--check-config", "--id", "h1", "--kafka-batch-bytes", "99999999"}, io.Discard, io.Discard), "kafka-batch-bytes")
	out.Reset()
	require.NoError(t, run(context.Background(), []string{"--version"}, &out, io.Discard))
	require.True(t, strings.HasPrefix(out.String(), "logagent "), out.String())
}
