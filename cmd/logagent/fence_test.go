package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/topics"
)

// TestPausedAgentFencesItself: three real agents share a topic's files
// while writers append; the busiest is frozen (SIGSTOP) for longer than its
// lease TTL, so the coordinator gives its files to the others, then thawed.
// Nothing is lost, and in each moved file's partition no record of the
// frozen agent's old run comes after its successor began: once thawed, the
// agent cannot prove its lease, drops what it had not written, and reads
// its assignments again before it ships anything.
func TestPausedAgentFencesItself(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real agents for about half a minute")
	}
	bin := buildAgent(t)
	e := testenv.StartEtcd(t)
	k := testenv.StartKafka(t)
	cli := e.Client()
	ks := keyspace.Space{}
	dir := t.TempDir()
	const nfiles = 6
	for i := range nfiles {
		hdr := fmt.Sprintf("# fence file %d %s\n", i, strings.Repeat("=", 40))
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("app%d.log", i)), []byte(hdr), 0o644))
	}
	_, err := topics.NewStore(cli, ks).Put(context.Background(), "fence",
		topics.Config{Paths: []string{dir + "/*.log"}, Shared: true})
	require.NoError(t, err)

	co, err := coordinator.New(coordinator.Config{Client: cli, Space: ks, ID: "c1", LeaseTTL: 2 * time.Second,
		HandoverTimeout: 5 * time.Second, ReconcileInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	require.NoError(t, err)
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan error, 1)
	go func() { cdone <- co.Run(cctx) }()
	t.Cleanup(func() { ccancel(); <-cdone })

	agents := map[string]*child{}
	for _, id := range []string{"h1", "h2", "h3"} {
		agents[id] = startChild(t, bin, "--etcd-endpoints", e.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","),
			"--id", id, "--allow-path", dir, "--scan-interval", "200ms", "--state-dir", t.TempDir(),
			"--checkpoint-interval", "500ms", "--lease-ttl", "3s", "--fingerprint-bytes", "32", "--kafka-linger", "5ms")
	}

	// Writers append numbered lines to every file throughout.
	var written [nfiles]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nfiles {
		written[i].Store(1) // the header
		wg.Go(func() {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("app%d.log", i)), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			tick := time.NewTicker(3 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				fmt.Fprintf(f, "file %d line %08d\n", i, n)
				written[i].Add(1)
			}
		})
	}

	owners := func() map[string]string { // file key -> agent
		resp, err := cli.Get(context.Background(), ks.AssignPrefix(), clientv3.WithPrefix())
		require.NoError(t, err)
		out := map[string]string{}
		for _, kv := range resp.Kvs {
			key, err := ks.Parse(string(kv.Key))
			require.NoError(t, err)
			out[key.File] = key.Agent
		}
		return out
	}
	testenv.WaitFor(t, 30*time.Second, "every file assigned and shipping", func() bool {
		return len(owners()) == nfiles && len(testenv.ReadAll(t, k.Brokers(), "fence")) > 3000
	})
	load := map[string]int{}
	for _, a := range owners() {
		load[a]++
	}
	busiest := "h1"
	for a, n := range load {
		if n > load[busiest] {
			busiest = a
		}
	}
	var moved []string
	for f, a := range owners() {
		if a == busiest {
			moved = append(moved, f)
		}
	}
	t.Logf("freezing %s, owner of %d files", busiest, len(moved))
	agents[busiest].signal(t, syscall.SIGSTOP)
	// Frozen until its files are assigned to others and the successors
	// have shipped each of them for a while.
	testenv.WaitFor(t, 30*time.Second, "the frozen agent's files to move and be shipped by others", func() bool {
		o := owners()
		for _, f := range moved {
			if a, ok := o[f]; !ok || a == busiest {
				return false
			}
		}
		shipped := map[string]int{}
		for _, r := range testenv.ReadAll(t, k.Brokers(), "fence") {
			if r.Headers["host"] != busiest {
				shipped[r.Headers["file"]]++
			}
		}
		for _, f := range moved {
			if shipped[f] < 500 {
				return false
			}
		}
		return true
	})
	agents[busiest].signal(t, syscall.SIGCONT)
	testenv.WaitFor(t, 30*time.Second, "the thawed agent back with a new lease", func() bool {
		resp, err := cli.Get(context.Background(), ks.Heartbeat("fence", busiest))
		return err == nil && len(resp.Kvs) == 1
	})
	count := func() int { return len(testenv.ReadAll(t, k.Brokers(), "fence")) }
	before := count()
	testenv.WaitFor(t, 30*time.Second, "shipping to go on", func() bool { return count() > before+2000 })
	close(stop)
	wg.Wait()

	var recs []testenv.Record
	testenv.WaitFor(t, 60*time.Second, "every line in Kafka", func() bool {
		recs = testenv.ReadAll(t, k.Brokers(), "fence")
		distinct := map[string]map[string]bool{}
		for _, r := range recs {
			if distinct[r.Headers["path"]] == nil {
				distinct[r.Headers["path"]] = map[string]bool{}
			}
			distinct[r.Headers["path"]][r.Headers["offset"]] = true
		}
		for i := range nfiles {
			if int64(len(distinct[filepath.Join(dir, fmt.Sprintf("app%d.log", i))])) < written[i].Load() {
				return false
			}
		}
		return true
	})
	for _, c := range agents {
		c.sigterm(t)
	}

	// In each moved file's partition (the key is the file), in log order:
	// once another agent has begun, a record of the frozen agent is its old
	// run's if it is not past everything the others shipped before it (a
	// file handed back to it later continues after its successor's final
	// offset).
	for _, f := range moved {
		var late, beforeOthers int
		othersBegan, othersMax := false, int64(-1)
		for _, r := range recs {
			if r.Headers["file"] != f {
				continue
			}
			off, err := strconv.ParseInt(r.Headers["offset"], 10, 64)
			require.NoError(t, err)
			if r.Headers["host"] != busiest {
				othersBegan = true
				othersMax = max(othersMax, off)
				continue
			}
			if !othersBegan {
				beforeOthers++
				continue
			}
			if off <= othersMax {
				late++
			}
		}
		t.Logf("file %s: %d records of %s before its successor, %d of its old run after", f, beforeOthers, busiest, late)
		require.Zero(t, late, "file %s: the frozen agent shipped %d records of its old run after its successor began", f, late)
	}
}
