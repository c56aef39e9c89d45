package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/logferry/logferry/internal/procstat"
	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
)

// BenchmarkLeaderTakesOverFleet measures the real coordinator binary taking
// over a converged fleet: BENCH_AGENTS agents (10,000) with BENCH_FILES
// files (100) each on one local topic, every file assigned and
// checkpointed, written into the embedded etcd beforehand. It reports the
// time until the binary leads and until its first pass is done (its
// status names every assignment), the peak RSS of the process (VmHWM) and
// the files moved (must be 0). The etcd server runs in the test process,
// so the child's memory is the coordinator's alone. BENCH_GOMEMLIMIT sets
// the child's GOMEMLIMIT.
//
//	go test -run '^$' -bench LeaderTakesOverFleet -benchtime 1x ./cmd/coordinator/
func BenchmarkLeaderTakesOverFleet(b *testing.B) {
	agents, files := envInt("BENCH_AGENTS", 10_000), envInt("BENCH_FILES", 100)
	bin := buildBinary(b)
	e := testenv.StartEtcd(b)
	admin := e.Client()
	start := time.Now()
	writeFleet(b, admin, agents, files)
	b.Logf("wrote %d agents x %d files in %v", agents, files, time.Since(start))

	for b.Loop() {
		addr := testenv.FreeAddr(b)
		cmd := exec.Command(bin, "--id", "bench", "--lease-ttl", "30s")
		cmd.Env = append(os.Environ(), "COORDINATOR_ETCD_ENDPOINTS="+e.Endpoint(), "COORDINATOR_LISTEN="+addr,
			"COORDINATOR_LOG_LEVEL=warn")
		if lim := os.Getenv("BENCH_GOMEMLIMIT"); lim != "" {
			cmd.Env = append(cmd.Env, "GOMEMLIMIT="+lim) // the child's only: etcd runs in this process
		}
		logs, err := os.Create(filepath.Join(b.TempDir(), "coordinator.log"))
		require.NoError(b, err)
		cmd.Stderr = logs
		start := time.Now()
		require.NoError(b, cmd.Start())
		stop := func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		}
		b.Cleanup(stop)
		var led, passed time.Duration
		var status protocol.CoordinatorStatus
		ok := testenv.Await(20*time.Minute, func() bool {
			_, body := testenv.HTTPGet("http://" + addr + "/metrics")
			if led == 0 && strings.Contains(body, "\ncoordinator_leader 1\n") {
				led = time.Since(start)
			}
			resp, err := admin.Get(context.Background(), keyspace.Space{}.CoordinatorStatus())
			if err != nil || len(resp.Kvs) == 0 || protocol.Unmarshal("status", resp.Kvs[0].Value, &status) != nil {
				return false
			}
			if status.Leader == "bench" && status.Assignments == agents*files {
				passed = time.Since(start)
				return true
			}
			return false
		})
		st, err := procstat.Status(cmd.Process.Pid, "VmHWM")
		require.NoError(b, err)
		hwm := int(st["VmHWM"] >> 10) // KiB
		_, body := testenv.HTTPGet("http://" + addr + "/metrics")
		stop()
		require.True(b, ok, "no first pass with every assignment within 20 minutes (status %+v); log in %s", status, logs.Name())
		b.ReportMetric(led.Seconds(), "lead-s")
		b.ReportMetric(passed.Seconds(), "first-pass-s")
		b.ReportMetric(float64(hwm)/1024, "peak-RSS-MiB")
		b.ReportMetric(float64(metricSum(body, "coordinator_files_moved_total")), "moved")
	}
}

// writeFleet writes the topic, the heartbeats, an assignment and a
// checkpoint per file, in Txns of 128 puts on four connections.
func writeFleet(b *testing.B, cli *clientv3.Client, agents, files int) {
	ks := keyspace.Space{}
	_, err := cli.Put(context.Background(), ks.Topic("pods"), `{"paths":["/var/log/pods/*/*/*.log"]}`)
	require.NoError(b, err)
	var g errgroup.Group
	const writers = 4
	for w := range writers {
		g.Go(func() error {
			var ops []clientv3.Op
			flush := func() error {
				if len(ops) == 0 {
					return nil
				}
				var err error
				for range 5 { // a loaded machine makes the embedded etcd time out now and then
					if _, err = cli.Txn(context.Background()).Then(ops...).Commit(); err == nil {
						break
					}
				}
				ops = ops[:0]
				return err
			}
			put := func(k string, v []byte) error {
				ops = append(ops, clientv3.OpPut(k, string(v)))
				if len(ops) == 128 {
					return flush()
				}
				return nil
			}
			for m := w; m < agents; m += writers {
				agent := fmt.Sprintf("10.%d.%d.%d", m>>16, (m>>8)&255, m&255)
				hb := protocol.Heartbeat{Agent: agent, Version: "bench", Started: time.Unix(1_700_000_000, 0)}
				for f := range files {
					key := fmt.Sprintf("%016x%016x", uint64(m)*0x9e3779b97f4a7c15, uint64(f)+1)
					path := fmt.Sprintf("/var/log/pods/default_app-%05d-7d9f8c6b5-x2x4z_%08x/app/%d.log", m, m*31+f, f)
					hb.Files = append(hb.Files, protocol.SeenFile{Key: key, Path: path})
					av, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: path, Leader: "before"})
					cv, _ := protocol.Marshal(&protocol.Checkpoint{Offset: 123456, Path: path, Agent: agent, Size: 234567, Updated: time.Unix(1_700_000_000, 0)})
					if err := put(ks.Assign(agent, "pods", key), av); err != nil {
						return err
					}
					if err := put(ks.Offset("pods", key), cv); err != nil {
						return err
					}
				}
				hv, _ := protocol.Marshal(&hb)
				if err := put(ks.Heartbeat("pods", agent), hv); err != nil {
					return err
				}
			}
			return flush()
		})
	}
	require.NoError(b, g.Wait())
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// metricSum adds up every sample of a metric in a Prometheus text body.
func metricSum(body, name string) float64 {
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err == nil {
				sum += v
			}
		}
	}
	return sum
}
