package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/statefile"
	"github.com/logferry/logferry/pkg/topics"
)

// TestKillNineResumesFromCheckpoint runs the real logagent binary as a
// child process, kill -9s it between two checkpoints while it ships a file
// that keeps growing, and resumes the file, once on the same host and once
// on another. Nothing is lost, every duplicate is a copy of its original
// (same offset, same line), and the duplicates are bounded by the tier the
// file resumes from:
//   - same host (restarted with its state directory): only lines after the
//     last save of the local state file, at most --checkpoint-interval of
//     lines (etcd is written hourly here: it cannot be what bounds them);
//   - another host (the file moved): only lines after the last etcd
//     checkpoint, at most --etcd-checkpoint-interval of lines.
func TestKillNineResumesFromCheckpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildAgent(t)
	for _, tc := range []struct {
		name     string
		failover bool
		etcd     string // --etcd-checkpoint-interval
	}{
		{"same host resumes from the local state file", false, "1h"},
		{"another host resumes from etcd", true, "2s"},
	} {
		t.Run(tc.name, func(t *testing.T) { crashAndResume(t, bin, tc.failover, tc.etcd) })
	}
}

// lineSize is the size of the writer's lines, "line %08d\n".
const lineSize = 14

func crashAndResume(t *testing.T, bin string, failover bool, etcdInterval string) {
	e := testenv.StartEtcd(t)
	k := testenv.StartKafka(t)
	cli := e.Client()
	ks := keyspace.Space{}
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	header := "# crash test file " + strings.Repeat("=", 40) + "\n"
	require.NoError(t, os.WriteFile(path, []byte(header), 0o644))
	_, err := topics.NewStore(cli, ks).Put(context.Background(), "crash", topics.Config{Paths: []string{path}, Shared: true})
	require.NoError(t, err)
	states := map[string]string{"h1": t.TempDir(), "h2": t.TempDir()}
	start := func(id string) *child {
		return startChild(t, bin, "--etcd-endpoints", e.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","),
			"--id", id, "--allow-path", dir, "--scan-interval", "100ms",
			"--checkpoint-interval", "500ms", "--etcd-checkpoint-interval", etcdInterval, "--state-dir", states[id],
			"--lease-ttl", "2s", "--fingerprint-bytes", "32", "--kafka-linger", "5ms")
	}
	agent := start("h1")

	// Play the coordinator: assign the file once the agent reports it.
	seen := firstFile(t, cli, ks, "crash", "h1")
	assign(t, cli, ks, "crash", "h1", seen)

	// A writer appends numbered lines while the agent is killed and the
	// file resumed.
	var written atomic.Int64
	written.Store(1) // the header
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
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
	})
	linesBefore := func(off int64) int { return 1 + int(off-int64(len(header)))/lineSize }
	// The checkpoint the resumed file starts from: the local state file's
	// on the same host, etcd's on another.
	resumeFrom := func() (int64, bool) {
		if !failover {
			return localOffset(t, states["h1"], seen.Key)
		}
		return etcdOffset(t, cli, ks, seen.Key)
	}
	// Kill between two checkpoints: when Kafka holds at least 300 lines
	// more than that checkpoint covers.
	testenv.WaitFor(t, 30*time.Second, "2,000 lines shipped, 300 past the checkpoint", func() bool {
		n := len(testenv.ReadAll(t, k.Brokers(), "crash"))
		off, ok := resumeFrom()
		return ok && n >= 2000 && n-linesBefore(off) >= 300
	})
	agent.kill9(t)
	cp, ok := resumeFrom()
	require.True(t, ok)
	shippedAtKill := len(testenv.ReadAll(t, k.Brokers(), "crash"))
	t.Logf("killed with %d records in Kafka, resuming from byte %d (line %d)", shippedAtKill, cp, linesBefore(cp))

	if failover {
		// The file moves to h2 (h1's lease would expire; the coordinator
		// would delete h1's assignment and give the file to h2).
		agent = start("h2")
		firstFile(t, cli, ks, "crash", "h2")
		_, err := cli.Delete(context.Background(), ks.Assign("h1", "crash", seen.Key))
		require.NoError(t, err)
		assign(t, cli, ks, "crash", "h2", seen)
	} else {
		agent = start("h1")
	}
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
	agent.sigterm(t) // a clean stop exits 0

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
			require.GreaterOrEqual(t, off, cp, "a line before the checkpoint it resumed from was shipped twice")
		}
	}
	t.Logf("%d lines, %d duplicates, all at or after byte %d", total, dups, cp)
	require.Positive(t, dups, "the kill landed between checkpoints, so lines after the last one are shipped again")
	require.LessOrEqual(t, dups, shippedAtKill-linesBefore(cp), "only lines shipped after the checkpoint are shipped twice")
}

// localOffset is the offset of file in the state file under dir.
func localOffset(t *testing.T, dir, file string) (int64, bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, statefile.FileName))
	if err != nil {
		return 0, false
	}
	var st struct {
		Entries map[string]statefile.Entry `json:"entries"`
	}
	require.NoError(t, json.Unmarshal(data, &st))
	e, ok := st.Entries["crash/"+file]
	return e.Offset, ok
}

func etcdOffset(t *testing.T, cli *clientv3.Client, ks keyspace.Space, file string) (int64, bool) {
	t.Helper()
	resp, err := cli.Get(context.Background(), ks.Offset("crash", file))
	require.NoError(t, err)
	if len(resp.Kvs) == 0 {
		return 0, false
	}
	var cp protocol.Checkpoint
	require.NoError(t, protocol.Unmarshal("checkpoint", resp.Kvs[0].Value, &cp))
	return cp.Offset, true
}
