package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// TestKillNineResumesFromCheckpoint runs the real logagent binary as a
// child process, kill -9s it between two checkpoints while it ships a file
// that keeps growing, and starts it again on the same state. Nothing is
// lost, and the only lines shipped twice are lines at or after the last
// checkpoint the killed process wrote (what it shipped in its last
// checkpoint interval), each a copy of its original (same offset, same
// line).
func TestKillNineResumesFromCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildAgent(t)

	e := testenv.StartEtcd(t)
	k := testenv.StartKafka(t)
	cli := e.Client()
	ks := keyspace.Space{}
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	header := "# crash test file " + strings.Repeat("=", 40) + "\n"
	require.NoError(t, os.WriteFile(path, []byte(header), 0o644))
	_, err := topics.NewStore(cli, ks).Put(context.Background(), "crash", topics.Config{Paths: []string{path}})
	require.NoError(t, err)

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--etcd-endpoints", e.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","),
			"--id", "h1", "--listen", testenv.FreeAddr(t), "--allow-path", dir, "--scan-interval", "100ms",
			"--checkpoint-interval", "2s", "--lease-ttl", "2s", "--fingerprint-bytes", "32", "--kafka-linger", "5ms")
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		return cmd
	}
	agent := start()
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })

	// Play the coordinator: assign the file once the agent reports it.
	seen := firstFile(t, cli, ks, "crash", "h1")
	assign(t, cli, ks, "crash", "h1", seen)

	// A writer appends numbered lines while the agent is killed and restarted.
	var written atomic.Int64
	written.Store(1) // the header
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for j := range 4 {
				fmt.Fprintf(f, "line %08d\n", 4*i+j)
				written.Add(1)
			}
		}
	}()

	// Kill between two checkpoints: when Kafka holds at least 300 lines
	// more than the last checkpoint covers (each line is 14 bytes).
	testenv.WaitFor(t, 30*time.Second, "2,000 lines shipped, 300 past the checkpoint", func() bool {
		n := len(testenv.ReadAll(t, k.Brokers(), "crash"))
		resp, err := cli.Get(context.Background(), ks.Offset("crash", seen.Key))
		require.NoError(t, err)
		if n < 2000 || len(resp.Kvs) == 0 {
			return false
		}
		var cp protocol.Checkpoint
		require.NoError(t, protocol.Unmarshal("checkpoint", resp.Kvs[0].Value, &cp))
		covered := 1 + int(cp.Offset-int64(len(header)))/14
		return n-covered >= 300
	})
	require.NoError(t, agent.Process.Signal(syscall.SIGKILL))
	_ = agent.Wait()
	cp := checkpointOf(t, cli, ks, seen.Key)
	shippedAtKill := len(testenv.ReadAll(t, k.Brokers(), "crash"))
	t.Logf("killed with %d records in Kafka, checkpoint at byte %d", shippedAtKill, cp)

	agent = start()
	testenv.WaitFor(t, 30*time.Second, "shipping to resume", func() bool {
		return len(testenv.ReadAll(t, k.Brokers(), "crash")) > shippedAtKill+2000
	})
	close(stop)
	wg.Wait()
	total := int(written.Load())
	var recs []testenv.Record
	testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("all %d lines", total), func() bool {
		recs = testenv.ReadAll(t, k.Brokers(), "crash")
		distinct := map[string]bool{}
		for _, r := range recs {
			distinct[r.Headers["offset"]] = true
		}
		return len(distinct) >= total
	})
	require.NoError(t, agent.Process.Signal(syscall.SIGTERM))
	require.NoError(t, agent.Wait(), "a clean stop exits 0")

	count := map[int64]int{}
	values := map[int64]string{}
	for _, r := range recs {
		off, err := strconv.ParseInt(r.Headers["offset"], 10, 64)
		require.NoError(t, err)
		if v, ok := values[off]; ok {
			require.Equal(t, v, r.Value, "a duplicate is a copy of its original")
		}
		values[off] = r.Value
		count[off]++
	}
	require.Len(t, count, total, "no line lost")
	dups := 0
	for off, n := range count {
		if n > 1 {
			dups += n - 1
			require.GreaterOrEqual(t, off, cp, "a line before the last checkpoint was shipped twice")
		}
	}
	t.Logf("%d lines, %d duplicates, all at or after the checkpoint %d", total, dups, cp)
	require.Positive(t, dups, "the kill landed between checkpoints, so lines after the last one are shipped again")
	require.LessOrEqual(t, dups, shippedAtKill-(1+int(cp-int64(len(header)))/14),
		"only lines shipped after the last checkpoint are shipped twice")
}

func checkpointOf(t *testing.T, cli *clientv3.Client, ks keyspace.Space, file string) int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.Offset("crash", file))
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1, "the killed agent wrote checkpoints")
	var cp protocol.Checkpoint
	require.NoError(t, protocol.Unmarshal("checkpoint", resp.Kvs[0].Value, &cp))
	return cp.Offset
}
