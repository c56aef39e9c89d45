package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/topics"
)

// TestSIGTERMStopsWithinTenSeconds: whatever etcd and Kafka do, SIGTERM
// ends the agent within 10 s with exit status 0. An etcd it cannot reach is
// named in its log and in /readyz.
func TestSIGTERMStopsWithinTenSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildAgent(t)
	e := testenv.StartEtcd(t)
	k := testenv.StartKafka(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app.log"), []byte("# stop test "+strings.Repeat("=", 40)+"\nline\n"), 0o644))
	_, err := topics.NewStore(e.Client(), keyspace.Space{}).Put(context.Background(), "stop", topics.Config{Paths: []string{dir + "/*.log"}})
	require.NoError(t, err)
	common := []string{"--allow-path", dir, "--fingerprint-bytes", "32", "--scan-interval", "200ms", "--lease-ttl", "3s", "--state-dir", t.TempDir()}

	t.Run("etcd unreachable from the start", func(t *testing.T) {
		dead := testenv.FreeAddr(t)
		c := startChild(t, bin, append(common, "--id", "h1", "--etcd-endpoints", dead, "--kafka-brokers", strings.Join(k.Brokers(), ","))...)
		testenv.WaitFor(t, 15*time.Second, "/readyz to say why, naming the unreachable etcd", func() bool {
			code, body := testenv.HTTPGet("http://" + c.listen + "/readyz")
			return code == 503 && strings.Contains(body, "etcd ["+dead+"]: ")
		})
		testenv.WaitFor(t, 15*time.Second, "the log to say etcd cannot be reached, naming it", func() bool {
			for _, line := range strings.Split(c.stderr.String(), "\n") {
				if strings.Contains(line, "cannot grant an etcd lease") && strings.Contains(line, dead) {
					return true
				}
			}
			return false
		})
		c.sigterm(t)
	})

	t.Run("kafka unreachable with a file to ship", func(t *testing.T) {
		dead := testenv.FreeAddr(t)
		c := startChild(t, bin, append(common, "--id", "h2", "--etcd-endpoints", e.Endpoint(), "--kafka-brokers", dead)...)
		f := firstFile(t, e.Client(), keyspace.Space{}, "stop", "h2")
		assign(t, e.Client(), keyspace.Space{}, "stop", "h2", f)
		testenv.WaitFor(t, 15*time.Second, "a failed write to Kafka", func() bool {
			_, body := testenv.HTTPGet("http://" + c.listen + "/metrics")
			return strings.Contains(body, "logferry_ship_write_errors_total") || strings.Contains(c.stderr.String(), "kafka write failed")
		})
		c.sigterm(t)
	})

	t.Run("kafka failing while shipping", func(t *testing.T) {
		c := startChild(t, bin, append(common, "--id", "h4", "--etcd-endpoints", e.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","))...)
		f := firstFile(t, e.Client(), keyspace.Space{}, "stop", "h4")
		assign(t, e.Client(), keyspace.Space{}, "stop", "h4", f)
		testenv.WaitFor(t, 15*time.Second, "the line shipped", func() bool {
			return len(testenv.ReadAll(t, k.Brokers(), "stop")) > 0
		})
		fault := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
		defer fault.Remove()
		appendLine(t, filepath.Join(dir, "app.log"), "written while Kafka refuses\n")
		testenv.WaitFor(t, 15*time.Second, "a failed write to Kafka", func() bool { return fault.Hits() > 0 })
		c.sigterm(t)
	})

	t.Run("etcd cut off while shipping", func(t *testing.T) {
		p := testenv.StartProxy(t, e.Endpoint())
		c := startChild(t, bin, append(common, "--id", "h3", "--etcd-endpoints", p.Addr(), "--kafka-brokers", strings.Join(k.Brokers(), ","))...)
		f := firstFile(t, e.Client(), keyspace.Space{}, "stop", "h3")
		assign(t, e.Client(), keyspace.Space{}, "stop", "h3", f)
		testenv.WaitFor(t, 15*time.Second, "the line shipped", func() bool {
			return len(testenv.ReadAll(t, k.Brokers(), "stop")) > 0
		})
		p.Cut()
		testenv.WaitFor(t, 15*time.Second, "/readyz to fail with etcd cut off", func() bool {
			code, body := testenv.HTTPGet("http://" + c.listen + "/readyz")
			return code == 503 && strings.Contains(body, p.Addr())
		})
		c.sigterm(t)
		require.Contains(t, c.stderr.String(), "cannot prove the etcd lease alive", "the agent fenced itself")
	})
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(line)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}
