package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator"
	"github.com/logferry/logferry/pkg/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHelpVersionAndCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"--help"}, &out, &errb))
	for _, want := range []string{"--etcd-endpoints", "COORDINATOR_ETCD_ENDPOINTS", "--id", "COORDINATOR_ID", "--listen",
		"--etcd-prefix", "--lease-ttl", "COORDINATOR_LEASE_TTL", "--handover-timeout", "--reconcile-interval",
		"--resync-interval", "--compact-interval", "COORDINATOR_COMPACT_INTERVAL", "--owner-gone-rate", "--owner-gone-grace", "COORDINATOR_OWNER_GONE_GRACE", "--memory-limit",
		"COORDINATOR_MEMORY_LIMIT", "--pprof", "COORDINATOR_PPROF", "--checkpoint-retention", "COORDINATOR_CHECKPOINT_RETENTION", "--checkpoint-delete-rate",
		"--log-level", "--etcd-ca", "--etcd-user", "--check-config", "--version"} {
		require.Contains(t, errb.String(), want)
	}

	out.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--version"}, &out, &errb))
	require.True(t, strings.HasPrefix(out.String(), "coordinator "), out.String())

	out.Reset()
	errb.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--check-config", "--id", "c1"}, &out, &errb), errb.String())
	require.Contains(t, out.String(), "configuration ok")

	for _, bad := range [][]string{
		{"--check-config", "--lease-ttl", "500ms"},
		{"--check-config", "--etcd-prefix", "no-slash"},
		{"--check-config", "--log-level", "loud"},
		{"--check-config", "--listen", "nope"},
		{"--check-config", "--handover-timeout", "1s", "--reconcile-interval", "2s"},
		{"--check-config", "--etcd-cert", "/x.pem"},
		{"--check-config", "--owner-gone-rate", "-5"},
		{"--check-config", "--compact-interval", "10s"},
		{"--check-config", "--checkpoint-retention", "-1h"},
		{"--check-config", "--checkpoint-delete-rate", "0"},
		{"--check-config", "--memory-limit", "lots"},
		{"--check-config", "--owner-gone-grace", "-1s"},
		{"--check-config", "--memory-limit", "-1GiB"},
		{"--no-such-flag"},
		{"stray"},
	} {
		errb.Reset()
		require.Equal(t, 2, run(context.Background(), bad, &out, &errb), "%v: %s", bad, errb.String())
		require.NotEmpty(t, errb.String())
	}

	t.Setenv("COORDINATOR_LEASE_TTL", "0s")
	errb.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"--check-config"}, &out, &errb))
	require.Contains(t, errb.String(), "--lease-ttl")
	// The command line wins over the environment.
	require.Equal(t, 0, run(context.Background(), []string{"--check-config", "--lease-ttl", "2s"}, &out, &errb))
	// Command flags are not read from the environment.
	t.Setenv("COORDINATOR_VERSION", "true")
	out.Reset()
	require.Equal(t, 0, run(context.Background(), []string{"--check-config", "--lease-ttl", "2s"}, &out, &errb))
	require.Contains(t, out.String(), "configuration ok")
}

// The binary's wiring in-process: it connects, leads, serves /readyz and
// /metrics, writes status, and on a stop (SIGTERM's context) resigns and
// exits 0 within the contract's 10 s.
func TestRunLeadsServesAndStops(t *testing.T) {
	e := testenv.StartEtcd(t)
	admin := e.Client()
	addr := testenv.FreeAddr(t)
	t.Setenv("COORDINATOR_ETCD_ENDPOINTS", e.Endpoint())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb testenv.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--id", "c1", "--listen", addr, "--lease-ttl", "2s", "--log-format", "json", "--memory-limit", "3GiB"}, &out, &errb)
	}()
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	testenv.WaitFor(t, 10*time.Second, "/readyz to answer 200", func() bool {
		c, _ := testenv.HTTPGet("http://" + addr + "/readyz")
		return c == http.StatusOK
	})
	c, body := testenv.HTTPGet("http://" + addr + "/healthz")
	require.Equal(t, http.StatusOK, c, body)
	require.Equal(t, int64(3<<30), debug.SetMemoryLimit(-1), "--memory-limit sets the runtime's soft limit")
	testenv.WaitFor(t, 10*time.Second, "the leader gauge", func() bool {
		_, body := testenv.HTTPGet("http://" + addr + "/metrics")
		return strings.Contains(body, "\ncoordinator_leader 1\n")
	})
	_, body = testenv.HTTPGet("http://" + addr + "/metrics")
	for _, m := range []string{"coordinator_reconcile_duration_seconds_bucket", `coordinator_files_moved_total{reason="owner_gone"}`,
		`coordinator_watch_resyncs_total{reason="compacted"}`, "coordinator_handover_timeouts_total", "coordinator_build_info", "go_goroutines", "go_gc_gomemlimit_bytes"} {
		require.Contains(t, body, m)
	}
	testenv.WaitFor(t, 10*time.Second, "/status/coordinator", func() bool {
		resp, err := admin.Get(context.Background(), "/status/coordinator")
		require.NoError(t, err)
		if len(resp.Kvs) == 0 {
			return false
		}
		var st protocol.CoordinatorStatus
		require.NoError(t, protocol.Unmarshal("status", resp.Kvs[0].Value, &st))
		return st.Leader == "c1"
	})

	stopped := time.Now()
	cancel()
	select {
	case c := <-code:
		require.Equal(t, 0, c, errb.String())
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of the stop")
	}
	t.Logf("stopped in %v", time.Since(stopped))
	resp, err := admin.Get(context.Background(), "/coordinator/election/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "resigned and revoked on stop")
	require.Contains(t, errb.String(), `"msg":"elected leader"`)
}

// The real binary and a real SIGTERM: it resigns and exits 0 well within
// the contract's 10 s. Skipped with -short (it builds the binary).
func TestBinarySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildBinary(t)
	e := testenv.StartEtcd(t)
	admin := e.Client()
	addr := testenv.FreeAddr(t)
	var errb testenv.Buffer
	cmd := exec.Command(bin, "--id", "c-bin", "--lease-ttl", "30s")
	cmd.Env = append(os.Environ(), "COORDINATOR_ETCD_ENDPOINTS="+e.Endpoint(), "COORDINATOR_LISTEN="+addr)
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	testenv.WaitFor(t, 10*time.Second, "the binary to lead", func() bool {
		_, body := testenv.HTTPGet("http://" + addr + "/metrics")
		return strings.Contains(body, "\ncoordinator_leader 1\n")
	})
	start := time.Now()
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-exited:
		require.NoError(t, exitErr, "exit status 0 expected; stderr:\n%s", errb.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("no exit within 10s of SIGTERM; stderr:\n%s", errb.String())
	}
	t.Logf("exited %v after SIGTERM", time.Since(start))
	resp, err := admin.Get(context.Background(), "/coordinator/election/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "resigned: no election key left (the lease TTL is 30s)")
}

func TestZeroTurnsCompactionAndDampingOff(t *testing.T) {
	for _, c := range []struct {
		args      []string
		compact   time.Duration
		rate      float64
		retention time.Duration
	}{
		{nil, coordinator.DefaultCompactInterval, coordinator.DefaultOwnerGoneRate, coordinator.DefaultCheckpointRetention},
		{[]string{"--compact-interval", "0", "--owner-gone-rate", "0", "--checkpoint-retention", "0"}, -1, -1, -1},
		{[]string{"--compact-interval", "1h", "--owner-gone-rate", "50", "--checkpoint-retention", "168h", "--owner-gone-grace", "10s"}, time.Hour, 50, 168 * time.Hour},
	} {
		var o options
		var errb bytes.Buffer
		fs := newFlagSet(&o, &errb)
		require.NoError(t, fs.Parse(append([]string{"--id", "c1"}, c.args...)))
		_, cfg, err := o.validate(&errb)
		require.NoError(t, err, "%v", c.args)
		require.Equal(t, c.compact, cfg.CompactInterval, "%v", c.args)
		require.Equal(t, c.rate, cfg.OwnerGoneRate, "%v", c.args)
		require.Equal(t, c.retention, cfg.CheckpointRetention, "%v", c.args)
		if slices.Contains(c.args, "--owner-gone-grace") {
			require.Equal(t, 10*time.Second, cfg.OwnerGoneGrace)
		} else {
			require.Zero(t, cfg.OwnerGoneGrace, "no grace by default")
		}
	}
}

// The profiles are served only with --pprof: they reveal internals and a
// profile costs CPU while it runs.
func TestPprofOnlyWhenEnabled(t *testing.T) {
	e := testenv.StartEtcd(t)
	t.Setenv("COORDINATOR_ETCD_ENDPOINTS", e.Endpoint())
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint("enabled=", enabled), func(t *testing.T) {
			addr := testenv.FreeAddr(t)
			args := []string{"--id", "c1", "--listen", addr, "--lease-ttl", "2s"}
			if enabled {
				args = append(args, "--pprof")
			}
			ctx, cancel := context.WithCancel(context.Background())
			var out, errb testenv.Buffer
			code := make(chan int, 1)
			go func() { code <- run(ctx, args, &out, &errb) }()
			defer func() {
				cancel()
				require.Equal(t, 0, <-code, errb.String())
			}()
			testenv.WaitFor(t, 10*time.Second, "/healthz to answer 200", func() bool {
				c, _ := testenv.HTTPGet("http://" + addr + "/healthz")
				return c == http.StatusOK
			})
			c, body := testenv.HTTPGet("http://" + addr + "/debug/pprof/goroutine?debug=1")
			if enabled {
				require.Equal(t, http.StatusOK, c, body)
				require.Contains(t, body, "goroutine profile")
			} else {
				require.Equal(t, http.StatusNotFound, c, body)
			}
		})
	}
}

func TestMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	noCgroup := func() (int64, bool) { return 0, false }
	cgroup := func() (int64, bool) { return 2000 * mib, true }
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMEMLIMIT" {
				return v
			}
			return ""
		}
	}
	for _, c := range []struct {
		flag, env string
		cgroup    func() (int64, bool)
		want      int64
		why       string
	}{
		{"auto", "", noCgroup, 0, "off"},
		{"auto", "", cgroup, 1800 * mib, "cgroup"},
		{"auto", "1GiB", cgroup, 0, "GOMEMLIMIT=1GiB"},
		{"0", "", cgroup, 0, "off"},
		{"900MiB", "1GiB", cgroup, 900 * mib, "--memory-limit"},
		{"1.5GiB", "", noCgroup, 1536 * mib, "--memory-limit"},
		{"123456", "", noCgroup, 123456, "--memory-limit"},
		{"64KiB", "", noCgroup, 64 << 10, "--memory-limit"},
	} {
		got, err := resolveMemoryLimit(c.flag, env(c.env), c.cgroup)
		require.NoError(t, err, c.flag)
		require.Equal(t, c.want, got.bytes, "%+v", c)
		require.Contains(t, got.why, c.why, "%+v", c)
	}
	for _, bad := range []string{"", "lots", "-1", "1GB", "NaNMiB", "1e30TiB"} {
		_, err := resolveMemoryLimit(bad, env(""), noCgroup)
		require.ErrorContains(t, err, fmt.Sprintf("--memory-limit %q", bad))
	}
}

// buildBinary builds the coordinator command into a temporary directory.
func buildBinary(tb testing.TB) string {
	bin := filepath.Join(tb.TempDir(), "coordinator")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(tb, build.Run())
	return bin
}
