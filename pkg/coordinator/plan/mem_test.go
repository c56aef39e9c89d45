package plan

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
)

// BenchmarkStateMemory builds the leader's State for a fleet of 10,000
// agents with 100 files each on one local topic (1,000,000 files, every one
// assigned and checkpointed), fed event by event as the mirror feeds it
// (heartbeats and assignments with their values, checkpoints keys only),
// then plans once (a steady state: nothing to do). It reports the heap the
// State and Planner keep (after a collection) and what one pass allocates.
//
//	go test -run '^$' -bench StateMemory -benchtime 1x ./pkg/coordinator/plan/
func BenchmarkStateMemory(b *testing.B) {
	members, per := benchFleet()
	for b.Loop() {
		before := testenv.HeapAfterGC()
		s := NewState(ks)
		rev := int64(0)
		apply := func(key string, value []byte) {
			rev++
			s.Apply(mirror.Event{Type: mirror.Put, KV: mirror.KV{Key: key, Value: value, CreateRevision: rev, ModRevision: rev}})
		}
		apply(ks.Topic("pods"), []byte(`{"paths":["/var/log/pods/*/*/*.log"]}`))
		for m := range members {
			agent := fmt.Sprintf("10.%d.%d.%d", m>>16, (m>>8)&255, m&255)
			hb := protocol.Heartbeat{Agent: agent, Version: "v1.2.3", Started: time.Unix(1_700_000_000, 0)}
			for f := range per {
				hb.Files = append(hb.Files, protocol.SeenFile{Key: fileKey(m, f), Path: podPath(m, f)})
			}
			apply(ks.Heartbeat("pods", agent), must(protocol.Marshal(&hb)))
			for f := range per {
				key := fileKey(m, f)
				apply(ks.Assign(agent, "pods", key), must(protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: podPath(m, f), Leader: "coordinator-1"})))
				apply(ks.Offset("pods", key), nil)
			}
		}
		s.SetRevision(rev)
		p, err := NewPlanner(ks, Options{Leader: "coordinator-1", HandoverTimeout: time.Minute, AsyncRings: true})
		require.NoError(b, err)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		allocBefore := ms.TotalAlloc
		start := time.Now()
		pl, err := p.Plan(s, time.Now())
		took := time.Since(start)
		require.NoError(b, err)
		require.Empty(b, pl.Groups, "a steady state")
		require.Equal(b, members*per, pl.Assignments)
		runtime.ReadMemStats(&ms)
		passAlloc := ms.TotalAlloc - allocBefore
		pl = nil
		kept := testenv.HeapAfterGC() - before
		if f := os.Getenv("BENCH_HEAPPROFILE"); f != "" {
			out, err := os.Create(f)
			require.NoError(b, err)
			require.NoError(b, pprof.WriteHeapProfile(out))
			require.NoError(b, out.Close())
		}
		b.ReportMetric(float64(kept)/(1<<20), "state-MiB")
		b.ReportMetric(float64(kept)/float64(members*per), "B/file")
		b.ReportMetric(float64(passAlloc)/(1<<20), "pass-alloc-MiB")
		b.ReportMetric(took.Seconds(), "pass-s")
		runtime.KeepAlive(s)
		runtime.KeepAlive(p)
	}
}

func fileKey(m, f int) string {
	return fmt.Sprintf("%016x%016x", uint64(m)*0x9e3779b97f4a7c15, uint64(f)+1)
}

func podPath(m, f int) string {
	return fmt.Sprintf("/var/log/pods/default_app-%05d-7d9f8c6b5-x2x4z_%08x/app/%d.log", m, m*31+f, f)
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// benchFleet is 10,000 agents x 100 files, or BENCH_MEMBERS agents.
func benchFleet() (members, per int) {
	members = 10_000
	if n, err := strconv.Atoi(os.Getenv("BENCH_MEMBERS")); err == nil && n > 0 {
		members = n
	}
	return members, 100
}
