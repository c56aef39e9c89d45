package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
)

// BenchmarkRetentionSweep: one sweep of the checkpoint lifecycle over the
// leader's State for 10,000 agents with 100 live files each on one local
// topic (1,000,000 files, every one assigned and checkpointed) and 10 gone
// files each (100,000 candidates, already read, their clocks running). It
// reports the sweep's time and allocations and the heap the candidates
// keep, per candidate.
//
//	go test -run '^$' -bench RetentionSweep -benchtime 1x ./pkg/coordinator/
func BenchmarkRetentionSweep(b *testing.B) {
	const members, live, gone = 10_000, 100, 10
	for b.Loop() {
		s := plan.NewState(ks)
		writer := map[string]string{} // gone file -> its writer
		rev := int64(0)
		apply := func(key string, value []byte) {
			rev++
			s.Apply(mirror.Event{Type: mirror.Put, KV: mirror.KV{Key: key, Value: value, CreateRevision: rev, ModRevision: rev}})
		}
		key := func(m, f int) string { return fmt.Sprintf("%016x%016x", uint64(m)*0x9e3779b97f4a7c15, uint64(f)+1) }
		apply(ks.Topic("pods"), []byte(`{"paths":["/var/log/pods/*/*/*.log"]}`))
		for m := range members {
			agent := fmt.Sprintf("10.%d.%d.%d", m>>16, (m>>8)&255, m&255)
			hb := protocol.Heartbeat{Agent: agent, Version: "v1"}
			for f := range live {
				hb.Files = append(hb.Files, protocol.SeenFile{Key: key(m, f), Path: fmt.Sprintf("/var/log/pods/p%d/%d.log", m, f)})
			}
			apply(ks.Heartbeat("pods", agent), must(protocol.Marshal(&hb)))
			for f := range live {
				apply(ks.Assign(agent, "pods", key(m, f)), must(protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: hb.Files[f].Path, Leader: "c1"})))
				apply(ks.Offset("pods", key(m, f)), nil)
			}
			for f := live; f < live+gone; f++ {
				apply(ks.Offset("pods", key(m, f)), nil)
				writer[key(m, f)] = agent
			}
		}
		s.SetRevision(rev)

		rm, err := newRetentionMetrics(prometheus.NewRegistry())
		require.NoError(b, err)
		c := &Coordinator{cfg: Config{Space: ks, CheckpointRetention: DefaultCheckpointRetention, CheckpointDeleteRate: DefaultCheckpointDeleteRate}, rm: rm}
		r := newRetention(&term{c: c, log: slog.New(slog.DiscardHandler)})
		// The candidates as a first sweep and its reads leave them, built
		// between two heap measurements.
		before := testenv.HeapAfterGC()
		cs := map[string]candidate{}
		t := s.Topic("pods")
		for f := range t.Offsets {
			if t.Assigns[f].Len() == 0 {
				cs[f] = candidate{modRev: 1, agent: t.Members[writer[f]].Agent}
			}
		}
		r.cands["pods"] = cs
		kept := testenv.HeapAfterGC() - before
		require.Len(b, cs, members*gone)

		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		allocBefore := ms.TotalAlloc
		start := time.Now()
		require.NoError(b, r.sweep(context.Background(), s, time.Now()))
		took := time.Since(start)
		runtime.ReadMemStats(&ms)
		require.Equal(b, float64(members*gone), testutil.ToFloat64(rm.pending))
		b.ReportMetric(took.Seconds(), "sweep-s")
		b.ReportMetric(float64(ms.TotalAlloc-allocBefore)/(1<<20), "sweep-alloc-MiB")
		b.ReportMetric(float64(kept)/float64(len(cs)), "B/candidate")
		runtime.KeepAlive(s)
		runtime.KeepAlive(r)
		runtime.KeepAlive(writer)
	}
}
