package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

// scanRig is an inventory driven by hand, without the agent's goroutines:
// one topic ("t") over n files of dir, with the directory watcher watching
// dir (as the agent runs it), so that scans of a local topic take the
// scanner's trusted path.
type scanRig struct {
	inv  *inventory
	dir  string
	runs map[fileRef]*fileRun
}

type rigOpts struct {
	shared   bool   // the topic is shared
	parked   bool   // each file is assigned to this agent and parked, as an idle agent's
	stateDir string // the agent's --state-dir
}

func newScanRig(tb testing.TB, n int, o rigOpts) *scanRig {
	tb.Helper()
	etcd := testenv.StartEtcd(tb)
	kafka := testenv.StartKafka(tb)
	dir := tb.TempDir()
	for i := range n {
		name := fmt.Sprintf("f%06d.log", i)
		require.NoError(tb, os.WriteFile(filepath.Join(dir, name), []byte(header(name)+"one line\n"), 0o644))
	}
	reg := prometheus.NewRegistry()
	kcfg := ship.DefaultConfig()
	kcfg.Brokers = kafka.Brokers()
	sh, err := ship.New(kcfg, reg, testLogger("bench"))
	require.NoError(tb, err)
	a, err := New(Config{Client: etcd.Client(), ID: "bench", Version: "test", AllowPaths: []string{dir},
		FingerprintBytes: testFP, Shipper: sh, Registerer: reg, Logger: testLogger("bench"), StateDir: o.stateDir})
	require.NoError(tb, err)
	probs := newProblems(a)
	inv := newInventory(a, a.board, newHeldFiles(a.m.filesHeld), newLostLedger(a, probs), probs)
	w, err := a.scanner.NewWatcher(a.log)
	require.NoError(tb, err)
	inv.watcher = w
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		_ = w.Run(ctx, func(f discovery.Found) bool { f.FD.Close(); return ctx.Err() == nil }, func() {}, func(string) {})
	}()
	tb.Cleanup(func() { cancel(); <-watchDone })
	inv.topics = map[string]topics.Entry{"t": {Name: "t", Config: topics.Config{Paths: []string{filepath.Join(dir, "*.log")}, Shared: o.shared}}}
	inv.topicsLoaded = true
	inv.setView(&runView{loaded: true})
	r := &scanRig{inv: inv, dir: dir, runs: map[fileRef]*fileRun{}}
	s := r.scan(tb)
	require.Len(tb, s.files["t"], n)
	if o.parked {
		r.park(s)
	}
	return r
}

// park assigns every file s lists to this agent, parked at its size.
func (r *scanRig) park(s *snapshot) {
	v := &runView{loaded: true, assigned: map[fileRef]bool{}, runs: map[fileRef]runInfo{}}
	for topic, files := range s.files {
		cfg := r.inv.topics[topic].Config
		for key, f := range files {
			ref := fileRef{topic, key}
			fr := newFileRun(ref.topic, ref.file, "assign/"+ref.file, 1, f.Path, f.Identity, &cfg)
			fr.state = stateParked
			r.runs[ref] = fr
			v.assigned[ref] = true
			v.runs[ref] = runInfo{fr: fr, state: stateParked, since: time.Now(), path: f.Path, parkedEnd: f.Size}
		}
	}
	r.inv.setView(v)
}

// scan runs one scan and returns the snapshot it published.
func (r *scanRig) scan(tb testing.TB) *snapshot {
	tb.Helper()
	r.inv.scan(context.Background())
	select {
	case s := <-r.inv.out:
		return s
	default:
		tb.Fatal("the scan published no snapshot")
		return nil
	}
}

// BenchmarkInventoryScan is the inventory's periodic scan of quiet files,
// parked, with nothing changed since the last scan: what an idle agent
// does every --scan-interval, per file. With active=1, one of the files
// grows by a line before each scan (a host always has a few busy logs).
//
//	go test -run '^$' -bench InventoryScan -benchmem ./pkg/agent/
func BenchmarkInventoryScan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, active := range []int{0, 1} {
			b.Run(fmt.Sprintf("files=%d/active=%d", n, active), func(b *testing.B) {
				r := newScanRig(b, n, rigOpts{parked: true})
				busy, err := os.OpenFile(filepath.Join(r.dir, "f000000.log"), os.O_APPEND|os.O_WRONLY, 0)
				require.NoError(b, err)
				defer busy.Close()
				step := func() {
					if active > 0 {
						_, err := busy.WriteString("another line\n")
						require.NoError(b, err)
					}
					r.scan(b)
				}
				// Scans for a while, as an agent that has run for some
				// time: the scanner lists a directory again until it has
				// been quiet for a second (discovery's racy window), and
				// confirms each file's cached identity once before it
				// trusts it.
				for warm := time.Now(); time.Since(warm) < 2*time.Second; {
					step()
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					step()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/file")
			})
		}
	}
}
