package agent

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator"
	"github.com/logferry/logferry/pkg/topics"
)

// startCoordinator runs the real coordinator against the env's etcd, with
// test-sized intervals and checkpoint retention.
func (e *env) startCoordinator(retention time.Duration) *prometheus.Registry {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	c, err := coordinator.New(coordinator.Config{
		Client: e.etcd.Client(), Space: e.ks, ID: "c1", Version: "test",
		LeaseTTL: time.Second, HandoverTimeout: 10 * time.Second, ReconcileInterval: 50 * time.Millisecond,
		StatusInterval: time.Second, CheckpointRetention: retention,
		ElectionMinBackoff: 20 * time.Millisecond, ElectionMaxBackoff: 200 * time.Millisecond,
		Registerer: reg, Logger: testLogger("c1"),
	})
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		require.NoError(e.t, <-done)
	})
	testenv.WaitFor(e.t, 10*time.Second, "the coordinator to lead", c.IsLeader)
	return reg
}

// metricValue is the value of the metric name (with the label pairs
// given) in reg, or -1 if there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func (e *env) checkpointKeys(topic string) int {
	e.t.Helper()
	resp, err := e.cli.Get(context.Background(), e.ks.TopicOffsetsPrefix(topic), clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(e.t, err)
	return int(resp.Count)
}

// rotate rotates name like logrotate with "rotate 3": the oldest
// generation is deleted, the others renamed one up, and a new file starts.
func (e *env) rotate(name, tag string) {
	e.t.Helper()
	if err := os.Remove(e.path(name + ".3")); err != nil && !os.IsNotExist(err) {
		require.NoError(e.t, err)
	}
	for i := 2; i >= 1; i-- {
		if err := renameFile(e.path(fmt.Sprintf("%s.%d", name, i)), e.path(fmt.Sprintf("%s.%d", name, i+1))); err != nil && !os.IsNotExist(err) {
			require.NoError(e.t, err)
		}
	}
	require.NoError(e.t, renameFile(e.path(name), e.path(name+".1")))
	e.write(name, header(tag))
}

// TestRotationsLeaveOneCheckpointPerFile: 40 rename rotations keeping 3
// generations, with the real agent and the real coordinator: every line
// is shipped once, and afterwards /offsets/ holds one key per existing
// file, not one per generation ever written. Then the host is kept down
// for several retentions: its checkpoints stay, and when it comes back
// (with an empty state directory, so only etcd tells where it stopped) it
// ships the lines written meanwhile and re-ships nothing.
func TestRotationsLeaveOneCheckpointPerFile(t *testing.T) {
	e := newEnv(t)
	const retention = time.Second
	reg := e.startCoordinator(retention)
	e.write("app.log", header("gen00"))
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log*"}})
	ag := e.startAgent("h1", withStateDir(t.TempDir()))

	const rotations, perGen = 40, 10
	want := 0
	for gen := 0; gen <= rotations; gen++ {
		e.writeLines("app.log", gen*perGen, (gen+1)*perGen)
		want += perGen + 1 // the header line too
		// Each generation is shipped before the next rotation deletes the
		// oldest: a file deleted unshipped is lost (and counted), not
		// what this test is about.
		e.waitRecords("app", want, 30*time.Second)
		if gen < rotations {
			e.rotate("app.log", fmt.Sprintf("gen%02d", gen+1))
		}
	}
	requireEachOnce(t, e.records("app"), want, "every line of 41 generations once")
	const existing = 4 // app.log and app.log.1 .. app.log.3
	testenv.WaitFor(t, 30*time.Second, "one checkpoint key per existing file, the gone generations' deleted", func() bool {
		// The counter moves just after etcd's keys: wait for both.
		return e.checkpointKeys("app") == existing &&
			metricValue(t, reg, "coordinator_checkpoints_deleted_total") == rotations+1-existing
	})
	deleted := metricValue(t, reg, "coordinator_checkpoints_deleted_total")

	// The host goes down, for several retentions; lines are written
	// meanwhile.
	require.NoError(t, ag.stop())
	e.writeLines("app.log", 1000, 1010)
	down := time.Now()
	var sweeps float64
	testenv.WaitFor(t, 30*time.Second, "the leader to sweep past three retentions with the host down", func() bool {
		n := metricValue(t, reg, "coordinator_checkpoint_sweeps_total")
		if time.Since(down) < 3*retention {
			sweeps = n
			return false
		}
		return n >= sweeps+3
	})
	require.Equal(t, existing, e.checkpointKeys("app"), "a down host keeps its checkpoints")
	require.Equal(t, float64(existing), metricValue(t, reg, "coordinator_checkpoints_held", "reason", "host_down"))
	require.Equal(t, deleted, metricValue(t, reg, "coordinator_checkpoints_deleted_total"))

	e.startAgent("h1", withStateDir(t.TempDir()))
	want += 10
	recs := e.waitRecords("app", want, 30*time.Second)
	requireEachOnce(t, recs, want, "the lines written while down, and nothing again")
	testenv.WaitFor(t, 10*time.Second, "every existing file listed and checkpointed again", func() bool {
		return e.checkpointKeys("app") == existing && metricValue(t, reg, "coordinator_checkpoints_held", "reason", "host_down") == 0
	})
	requireEachOnce(t, e.records("app"), want, "still nothing twice")
}
