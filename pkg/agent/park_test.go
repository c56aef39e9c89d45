package agent

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

func closeInactive(d time.Duration) agentOpt {
	return func(c *Config, _ *ship.Config) { c.CloseInactive = d }
}

func scanEvery(d time.Duration) agentOpt {
	return func(c *Config, _ *ship.Config) { c.ScanInterval = d }
}

// quietFiles writes n files of 3 lines, f000.log on, under local topic
// quiet.
func (e *env) quietFiles(n int) {
	e.t.Helper()
	for i := range n {
		name := fmt.Sprintf("f%03d.log", i)
		e.write(name, header(name))
		e.writeLines(name, 0, 2)
	}
	e.putTopic("quiet", topics.Config{Paths: []string{e.dir + "/*.log"}})
}

// parkedEnv starts an agent over n files of one local topic, assigns them
// all and waits until every line was shipped and every file is parked.
func parkedEnv(t *testing.T, n int, opts ...agentOpt) (*env, *runningAgent) {
	t.Helper()
	e := newEnv(t)
	e.quietFiles(n)
	ag := e.startAgent("h1", opts...)
	for i := range n {
		e.assign("quiet", "h1", e.waitSeen("quiet", "h1", fmt.Sprintf("f%03d.log", i)))
	}
	requireEachOnce(t, e.waitRecords("quiet", 3*n, 30*time.Second), 3*n, "every line of the quiet files")
	waitParked(t, ag, n)
	return e, ag
}

func waitParked(t *testing.T, ag *runningAgent, n int) {
	t.Helper()
	testenv.WaitFor(t, 20*time.Second, fmt.Sprintf("%d files parked, no tailer", n), func() bool {
		return metricValue(t, ag.reg, "logagent_files_parked") == float64(n) &&
			metricValue(t, ag.reg, "logagent_tailers") == 0
	})
}

// TestQuietFilesParkWithoutGoroutines: files quiet for --close-inactive
// are parked: no tailer, no goroutine of their own, still assigned and
// listed in the heartbeat; each keeps its descriptor (a file deleted
// while parked is still read to its end).
func TestQuietFilesParkWithoutGoroutines(t *testing.T) {
	const n = 60
	// One scan an hour: what wakes a file here is the directory watch.
	// A start slot for each: all of them woken at once are tailed at once
	// (with fewer slots, a file read to its end parks again while others
	// wait: starts_test.go).
	e, ag := parkedEnv(t, n, closeInactive(300*time.Millisecond), scanEvery(time.Hour), maxStarting(n))
	parked := runtime.NumGoroutine()
	hb, ok := e.heartbeat("quiet", "h1")
	require.True(t, ok)
	require.Len(t, hb.Files, n, "parked files stay in the heartbeat")

	// Wake them all: each gets its tailer (and its goroutines) back.
	for i := range n {
		e.writeLines(fmt.Sprintf("f%03d.log", i), 2, 3)
	}
	requireEachOnce(t, e.waitRecords("quiet", 4*n, 20*time.Second), 4*n, "a line written to each parked file")
	var tailing int
	testenv.WaitFor(t, 10*time.Second, "every file tailed again", func() bool {
		tailing = runtime.NumGoroutine()
		return metricValue(t, ag.reg, "logagent_tailers") == n
	})
	require.GreaterOrEqual(t, tailing-parked, n, "a tailing file costs at least a goroutine; a parked one none (%d parked, %d tailing)", parked, tailing)
	require.Equal(t, float64(n), metricValue(t, ag.reg, "logagent_parked_wakes_total", "by", "watch"))
	waitParked(t, ag, n)
}

// TestParkedFileWokenByTheDirectoryWatch: a line written to a parked file
// reaches Kafka long before any scan could have seen it, and a parked
// file renamed away (rotation) or deleted right after a write is read to
// its end through the descriptor it kept.
func TestParkedFileWokenByTheDirectoryWatch(t *testing.T) {
	e, ag := parkedEnv(t, 3, closeInactive(300*time.Millisecond), scanEvery(time.Hour))
	start := time.Now()
	e.writeLines("f000.log", 2, 3)
	e.waitRecords("quiet", 10, 10*time.Second)
	t.Logf("parked file written -> line in Kafka: %v", time.Since(start))
	require.Equal(t, 1.0, metricValue(t, ag.reg, "logagent_parked_wakes_total", "by", "watch"))
	waitParked(t, ag, 3)

	// Written, then at once renamed out of the globs, and another file
	// created under its name.
	e.writeLines("f001.log", 2, 4)
	require.NoError(t, os.Rename(e.path("f001.log"), e.path("f001.log.1")))
	e.write("f001.log", header("f001 new"))
	// Written, then deleted at once.
	e.writeLines("f002.log", 2, 4)
	require.NoError(t, os.Remove(e.path("f002.log")))
	recs := e.waitRecords("quiet", 14, 10*time.Second)
	requireEachOnce(t, recs, 14, "the lines written just before the rename and the delete")
}

// TestParkedFileWokenByTheScans: without the directory watch (inotify
// unavailable, or --watch-dirs=false), the scans wake a parked file whose
// size changed.
func TestParkedFileWokenByTheScans(t *testing.T) {
	e, ag := parkedEnv(t, 2, closeInactive(300*time.Millisecond),
		func(c *Config, _ *ship.Config) { c.NoDirWatch = true })
	e.writeLines("f001.log", 2, 5)
	requireEachOnce(t, e.waitRecords("quiet", 9, 10*time.Second), 9, "lines written to a parked file")
	require.GreaterOrEqual(t, metricValue(t, ag.reg, "logagent_parked_wakes_total", "by", "scan"), 1.0)
	require.Equal(t, -1.0, metricValue(t, ag.reg, "logagent_parked_wakes_total", "by", "watch"))
}

// TestParkingSeesAWriteBeforeItsRegistration: a write between the
// tailer's last read and the park registration sends no event the
// registration could see; parkRun finds it by size and the run is woken
// as it is parked, not left parked with unread lines.
func TestParkingSeesAWriteBeforeItsRegistration(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/app.log"
	require.NoError(t, os.WriteFile(path, []byte("one\n"), 0o644))
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	a := &Agent{parking: newParking()}
	for _, tc := range []struct {
		name    string
		end     int64
		touched bool
	}{{"unchanged", 4, false}, {"written since the read", 2, true}} {
		t.Run(tc.name, func(t *testing.T) {
			fr := newFileRun("t", "k", "a", 1, path, protocol.FileIdentity{}, &topics.Config{})
			fr.held = f
			a.parkRun(fr, path, tc.end)
			require.Equal(t, tc.touched, fr.park.touchedYet())
			fr.park.release()
		})
	}
	require.Zero(t, a.parking.parked(), "released registrations are gone")
}

// TestIdleScansReconcileNothing: once every file is parked, a scan that
// finds the same files reconciles nothing (at 10,000 files a reconcile of
// every run costs milliseconds, every --scan-interval), and a wake
// reconciles only the woken run.
func TestIdleScansReconcileNothing(t *testing.T) {
	_, ag := parkedEnv(t, 20, closeInactive(200*time.Millisecond), scanEvery(50*time.Millisecond))
	scans := func() uint64 { return histogramCount(t, ag.reg, "logagent_scan_duration_seconds") }
	all := metricValue(t, ag.reg, "logagent_reconciles_total", "scope", "all")
	from := scans()
	testenv.WaitFor(t, 10*time.Second, "ten scans", func() bool { return scans() >= from+10 })
	require.Equal(t, all, metricValue(t, ag.reg, "logagent_reconciles_total", "scope", "all"),
		"scans that found nothing new reconciled every run")
}

// getCounter counts the Gets of keys under prefix made through a client.
type getCounter struct {
	clientv3.KV
	prefix string
	n      atomic.Int64
}

func (g *getCounter) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if strings.HasPrefix(key, g.prefix) {
		g.n.Add(1)
	}
	return g.KV.Get(ctx, key, opts...)
}

// TestWakesReadNoCheckpoint: only a file's first run reads its checkpoint
// from etcd; a parked file woken by a write resumes from what was
// acknowledged, so a file written now and then costs etcd nothing.
func TestWakesReadNoCheckpoint(t *testing.T) {
	const n = 5
	var gets *getCounter
	counted := func(c *Config, _ *ship.Config) {
		cli := c.Client // the env's, which the test shares: count through a client of the agent's own
		own, err := clientv3.New(clientv3.Config{Endpoints: cli.Endpoints(), DialTimeout: 5 * time.Second})
		require.NoError(t, err)
		t.Cleanup(func() { own.Close() })
		gets = &getCounter{KV: own.KV, prefix: c.Space.OffsetsPrefix()}
		own.KV = gets
		c.Client = own
	}
	e, ag := parkedEnv(t, n, closeInactive(300*time.Millisecond), counted)
	first := gets.n.Load()
	require.GreaterOrEqual(t, first, int64(n), "each file's first run read its checkpoint")
	for i := range n {
		e.writeLines(fmt.Sprintf("f%03d.log", i), 2, 3)
	}
	requireEachOnce(t, e.waitRecords("quiet", 4*n, 20*time.Second), 4*n, "a line written to each parked file")
	waitParked(t, ag, n)
	require.Equal(t, first, gets.n.Load(), "no checkpoint read to wake a parked file")
	require.Equal(t, float64(n), metricValue(t, ag.reg, "logagent_parked_wakes_total", "by", "watch"))
}
