package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/logferry/logferry/internal/procstat"
	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/coordinator"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/topics"
)

// BenchmarkFootprint measures what the real logagent binary costs a host
// that has many quiet files: one local topic, N files of 20 lines each
// (FOOTPRINT_FILES, a comma-separated list, default "1000,10000"), an
// in-process coordinator, etcd and broker. For each N, sub-benchmark
// files=N/agent reports:
//   - files shipped (every line of the file in Kafka) against files present;
//   - the agent's resident memory (VmRSS) and its high-water mark (VmHWM);
//   - its CPU while idle: over FOOTPRINT_IDLE_SECONDS (default 20) once
//     every line is shipped and every file parked (FOOTPRINT_CLOSE_INACTIVE
//     sets --close-inactive; 0 measures without parking), from
//     /proc/<pid>/stat, in % of one core;
//   - its live heap after a collection (go_memstats_heap_inuse_bytes);
//   - its open descriptors (/proc/<pid>/fd), threads and goroutines
//     (go_goroutines on its /metrics);
//   - write->Kafka latency p50/p99: FOOTPRINT_LATENCY_FILES (default
//     1,000, at most N) files each get one line a second, evenly spread,
//     for FOOTPRINT_LATENCY_SECONDS (default 10); each line carries the
//     time it was written and is timed when a consumer of the broker
//     receives it;
//   - what its produce requests asked of the broker (version, acks,
//     compression of the batches).
//
// With FOOTPRINT_RSYSLOG=1, files=N/rsyslog measures rsyslogd the same way
// on the same broker (footprint_rsyslog_test.go), or says why it cannot.
//
// FOOTPRINT_TAIL_MODE sets --tail-mode (default: the agent's default);
// FOOTPRINT_HEAPPROFILE=FILE saves the idle agent's heap profile in
// FILE.<N>, FOOTPRINT_CPUPROFILE=FILE a CPU profile of its idle time
// (BENCH_CPUPROFILE_SECONDS, default 5).
// Run with `make bench`, or alone:
//
//	go test -run '^$' -bench Footprint -benchtime 1x ./cmd/logagent
func BenchmarkFootprint(b *testing.B) {
	if testing.Short() {
		b.Skip("runs the agent over thousands of files for minutes")
	}
	var sizes []int
	for s := range strings.SplitSeq(envString("FOOTPRINT_FILES", "1000,10000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			b.Fatalf("FOOTPRINT_FILES=%q: want positive integers separated by commas", os.Getenv("FOOTPRINT_FILES"))
		}
		sizes = append(sizes, n)
	}
	bin, rsyslog := buildAgent(b), findRsyslog(b)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			// One broker for every shipper measured, a topic each.
			k := testenv.StartKafka(b)
			wire := observeProduce(k)
			var agent footprint
			b.Run("agent", func(b *testing.B) {
				for range b.N {
					agent = measureFootprint(b, bin, k, n)
					agent.wire = wire(agent.topic)
					if rsyslog.skip != "" {
						agent.note = "; rsyslog not measured: " + rsyslog.skip
					}
					reportFootprint(b, agent)
				}
			})
			compareWithRsyslog(b, rsyslog, k, wire, n, agent)
		})
	}
}

// reportFootprint prints fp as the benchmark's metrics and one log line.
func reportFootprint(b *testing.B, fp footprint) {
	b.Helper()
	b.ReportMetric(float64(fp.shipped), "files-shipped")
	b.ReportMetric(float64(fp.present), "files-present")
	b.ReportMetric(fp.rss, "rss-MiB")
	b.ReportMetric(fp.hwm, "hwm-MiB")
	b.ReportMetric(fp.rssFile, "rss-file-MiB")
	b.ReportMetric(fp.idleCPU, "idle-cpu-%")
	b.ReportMetric(float64(fp.fds), "fds")
	if fp.liveHeap != 0 {
		b.ReportMetric(fp.liveHeap, "live-heap-MiB")
		b.ReportMetric(float64(fp.parked), "files-parked")
	}
	b.ReportMetric(float64(fp.threads), "threads")
	goroutines := ""
	if fp.goroutines != 0 {
		b.ReportMetric(float64(fp.goroutines), "goroutines")
		goroutines = fmt.Sprintf("; %d goroutines", fp.goroutines)
	}
	b.ReportMetric(fp.p50.Seconds()*1000, "p50-ms")
	b.ReportMetric(fp.p99.Seconds()*1000, "p99-ms")
	parked, heap := "", ""
	if fp.liveHeap != 0 {
		parked = fmt.Sprintf(", %d parked %v later", fp.parked, fp.parkTook.Round(time.Second))
		heap = fmt.Sprintf(", live heap %.1f", fp.liveHeap)
	}
	b.Logf("%s: %d of %d files shipped in %v%s; RSS %.1f MiB (%.1f of it the program's files; peak %.1f%s); idle CPU %.2f %% of a core over %v; "+
		"%d descriptors; %d threads%s; write->Kafka latency over %d files at 1 line/s: p50 %v, p99 %v (%d lines); produce requests: %s%s",
		fp.mode, fp.shipped, fp.present, fp.shipTook.Round(time.Millisecond), parked, fp.rss, fp.rssFile, fp.hwm, heap, fp.idleCPU, fp.idleOver,
		fp.fds, fp.threads, goroutines, fp.latFiles, fp.p50.Round(100*time.Microsecond), fp.p99.Round(100*time.Microsecond), fp.latLines, fp.wire, fp.note)
}

// footprint is one measurement of BenchmarkFootprint.
type footprint struct {
	mode             string // the shipper and how it runs
	topic            string
	present, shipped int
	shipTook         time.Duration
	parked           int           // the agent's files parked before the idle window
	parkTook         time.Duration // from the last line shipped to every file parked
	liveHeap         float64       // MiB in use after a collection (a Go shipper)
	rss, hwm         float64       // MiB
	rssFile          float64       // MiB of rss that are the program's files (its binary, libraries)
	idleCPU          float64       // % of one core
	idleOver         time.Duration
	fds, threads     int
	goroutines       int // 0 for a shipper not written in Go
	latFiles         int
	latLines         int
	p50, p99         time.Duration
	wire             string // what its produce requests asked of the broker
	note             string // anything else the shipper's row should say
}

func measureFootprint(b *testing.B, bin string, k *testenv.Kafka, n int) footprint {
	b.Helper()
	fp := footprint{mode: "logagent, tail mode " + envString("FOOTPRINT_TAIL_MODE", "default"), present: n,
		topic: fmt.Sprintf("footprint-%d", n)}
	dir, paths := writeFootprintFiles(b, n)
	e := testenv.StartEtcd(b)
	cli, ks := e.Client(), keyspace.Space{}
	createTopics(b, k.Brokers(), fp.topic)
	if _, err := topics.NewStore(cli, ks).Put(context.Background(), "fp", topics.Config{Paths: []string{dir + "/*.log"}, KafkaTopic: fp.topic}); err != nil {
		b.Fatal(err)
	}
	co, err := coordinator.New(coordinator.Config{Client: cli, Space: ks, ID: "c1", LeaseTTL: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	cdone := make(chan error, 1)
	go func() { cdone <- co.Run(cctx) }()
	defer func() { ccancel(); <-cdone }()

	args := []string{"--etcd-endpoints", e.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","), "--id", "fp",
		"--allow-path", dir, "--state-dir", b.TempDir(), "--log-level", "warn", "--pprof"}
	if m := os.Getenv("FOOTPRINT_TAIL_MODE"); m != "" {
		args = append(args, "--tail-mode", m)
	}
	if d := os.Getenv("FOOTPRINT_CLOSE_INACTIVE"); d != "" {
		args = append(args, "--close-inactive", d)
	}
	listen := testenv.FreeAddr(b)
	cmd := exec.Command(bin, append([]string{"--listen", listen}, args...)...)
	cmd.Stderr = os.Stderr
	// A benchmark killed midway must not leave an agent behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	settled := func() {
		// Every file parked (quiet for --close-inactive) before the idle
		// window. Polled once a second: a scrape of /metrics at 10,000
		// files (a series per file) costs the agent milliseconds, and
		// testenv.WaitFor's 10 ms polling would be most of what is
		// measured.
		start := time.Now()
		for os.Getenv("FOOTPRINT_CLOSE_INACTIVE") != "0" {
			if fp.parked = int(metricValue(b, listen, "logagent_files_parked")); fp.parked >= fp.shipped {
				break
			}
			if time.Since(start) > 10*time.Minute {
				b.Fatalf("%d of %d files parked after 10 minutes", fp.parked, fp.shipped)
			}
			settle(time.Second)
		}
		fp.parkTook = time.Since(start)
	}
	measureShipper(b, &fp, shipperRun{pid: cmd.Process.Pid, brokers: k.Brokers(), paths: paths, settled: settled, idle: func() (closed func()) {
		profiled := func() {}
		if out := os.Getenv("FOOTPRINT_CPUPROFILE"); out != "" {
			profiled = startCPUProfile(b, listen, fmt.Sprintf("%s.%d", out, n))
		}
		return func() {
			profiled()
			fp.goroutines = int(metricValue(b, listen, "go_goroutines"))
			// The heap the idle agent needs, after a collection (the
			// profile's ?gc=1): the RSS also holds what the start-up burst
			// left for the collector and the scavenger.
			if out := os.Getenv("FOOTPRINT_HEAPPROFILE"); out != "" {
				saveHeapProfile(b, listen, fmt.Sprintf("%s.%d", out, n))
			} else {
				testenv.HTTPGet("http://" + listen + "/debug/pprof/heap?gc=1")
			}
			fp.liveHeap = metricValue(b, listen, "go_memstats_heap_inuse_bytes") / (1 << 20)
		}
	}})
	return fp
}

// writeFootprintFiles writes n files of 20 lines in a new directory and
// returns it and their paths. Each line names its file and its number, so
// that a record tells which line it is whichever shipper sent it.
//
// The directory is made in FOOTPRINT_DIR, by default /var/tmp (or the
// test's temporary directory if there is none), not in $TMPDIR: rsyslog's
// imfile watches every directory above the files and, at each entry
// created or removed in one of them, reads the directories below again and
// stats every file of its glob; $TMPDIR is where every go build and test
// makes and removes its own. (The agent watches the files' directory only.)
func writeFootprintFiles(b *testing.B, n int) (dir string, paths []string) {
	b.Helper()
	base := os.Getenv("FOOTPRINT_DIR")
	if st, err := os.Stat("/var/tmp"); base == "" && err == nil && st.IsDir() {
		base = "/var/tmp"
	}
	if base == "" {
		dir = b.TempDir()
	} else {
		var err error
		if dir, err = os.MkdirTemp(base, "footprint-"); err != nil {
			b.Fatalf("FOOTPRINT_DIR=%q: %v", base, err)
		}
		b.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	paths = make([]string, n)
	for i := range n {
		paths[i] = filepath.Join(dir, fmt.Sprintf("app-%05d.log", i))
		var sb strings.Builder
		for l := range 20 {
			fmt.Fprintf(&sb, "%s file %05d line %02d: GET /api/v1/items/%d HTTP/1.1 200 %d\n",
				"2026-12-04T20:00:00Z", i, l, i*20+l, 1000+l)
		}
		if err := os.WriteFile(paths[i], []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir, paths
}

// shipperRun is a log shipper running as process pid that follows paths,
// files of writeFootprintFiles, into the topic of the footprint.
type shipperRun struct {
	pid     int
	brokers []string
	paths   []string
	// settled, if set, is called once every line is shipped and returns
	// when the shipper is idle by its own measure (the agent: every file
	// parked); the idle window opens 5 s later.
	settled func()
	// idle, if set, is called as the idle window opens; the function it
	// returns is called once the window's figures are read.
	idle func() (closed func())
}

// measureShipper fills fp with the figures of s, the same way for every
// shipper: how long until every line is in the broker and how many files
// are whole there; then, once the shipper has settled, its CPU over the
// idle window, its memory, descriptors and threads; then the write->Kafka
// latency of up to FOOTPRINT_LATENCY_FILES of its files.
func measureShipper(b *testing.B, fp *footprint, s shipperRun) {
	b.Helper()
	// Shipped: every line in the broker, or no progress for a minute.
	kc, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	if err != nil {
		b.Fatal(err)
	}
	defer kc.Close()
	adm := kadm.NewClient(kc)
	start := time.Now()
	want, last, lastChange := int64(len(s.paths)*20), int64(-1), time.Now()
	testenv.WaitFor(b, 15*time.Minute, "every line shipped, or no progress for a minute", func() bool {
		got := endOffsets(adm, fp.topic)
		if got != last {
			last, lastChange = got, time.Now()
		}
		return got >= want || time.Since(lastChange) > time.Minute
	})
	fp.shipTook = time.Since(start)
	fp.shipped = filesComplete(b, s.brokers, fp.topic, 20)

	// Idle: once the shipper says it is, and the checkpoints of the burst
	// are written.
	if s.settled != nil {
		s.settled()
	}
	settle(5 * time.Second)
	fp.idleOver = time.Duration(envInt(b, "FOOTPRINT_IDLE_SECONDS", 20)) * time.Second
	cpu0, t0 := procCPU(b, s.pid), time.Now()
	closed := func() {}
	if s.idle != nil {
		closed = s.idle()
	}
	settle(fp.idleOver)
	fp.idleCPU = (procCPU(b, s.pid) - cpu0).Seconds() / time.Since(t0).Seconds() * 100
	fp.rss, fp.hwm = procMem(b, s.pid)
	fp.rssFile = float64(procStatus(b, s.pid, "RssFile")["RssFile"]) / (1 << 20)
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", s.pid))
	if err != nil {
		b.Fatal(err)
	}
	fp.fds = len(ents)
	fp.threads = int(procStatus(b, s.pid, "Threads")["Threads"])
	closed()

	fp.latFiles = min(len(s.paths), envInt(b, "FOOTPRINT_LATENCY_FILES", 1000))
	lat := measureLatency(b, s.brokers, fp.topic, s.paths[:fp.latFiles], time.Duration(envInt(b, "FOOTPRINT_LATENCY_SECONDS", 10))*time.Second)
	fp.latLines = len(lat)
	if len(lat) > 0 {
		slices.Sort(lat)
		fp.p50, fp.p99 = lat[len(lat)*50/100], lat[min(len(lat)-1, len(lat)*99/100)]
	}
}

// settle lets d pass: the benchmark measures what the agent does over a
// window of time, so here waiting is the measurement, not a synchronisation.
func settle(d time.Duration) { <-time.After(d) }

// measureLatency writes one line a second to each of paths, spread evenly
// over the second, for d, and returns how long each took to reach a
// consumer of topic. Lines still missing 10 s after the last write are
// reported and left out.
func measureLatency(b *testing.B, brokers []string, topic string, paths []string, d time.Duration) []time.Duration {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	consumer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer consumer.Close()
	var (
		mu  sync.Mutex
		lat []time.Duration
	)
	// The consumer must have its partitions' end offsets before the first
	// write, or it starts past the first lines.
	testenv.WaitFor(b, 30*time.Second, "the latency consumer to join", func() bool {
		consumer.ForceMetadataRefresh()
		return len(consumer.GetConsumeTopics()) > 0
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := consumer.PollFetches(ctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				rest, ok := strings.CutPrefix(string(r.Value), "lat ")
				if !ok {
					return
				}
				ts, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
				if err != nil {
					return
				}
				mu.Lock()
				lat = append(lat, now.Sub(time.Unix(0, ts)))
				mu.Unlock()
			})
		}
	}()
	// Let the consumer's first fetch reach the broker.
	settle(time.Second)
	files := make([]*os.File, len(paths))
	for i, p := range paths {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	every := time.Second / time.Duration(len(paths))
	tick := time.NewTicker(every)
	written := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-tick.C
		f := files[written%len(files)]
		if _, err := fmt.Fprintf(f, "lat %d %s\n", time.Now().UnixNano(), filepath.Base(f.Name())); err != nil {
			b.Fatal(err)
		}
		written++
	}
	tick.Stop()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(lat) }
	if !testenv.Await(10*time.Second, func() bool { return count() >= written }) {
		b.Logf("latency: %d of %d lines reached the consumer", count(), written)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(lat)
}

// filesComplete counts the files of which topic holds lines distinct
// lines at least. A line is told by the file and line number written in it
// (writeFootprintFiles), not by the agent's headers, so that any shipper's
// records are counted alike.
func filesComplete(b *testing.B, brokers []string, topic string, lines int) int {
	b.Helper()
	seen := map[string]map[string]bool{}
	for _, r := range testenv.ReadAll(b, brokers, topic) {
		// "<time> file <i> line <l>: ..."
		f := strings.Fields(r.Value)
		if len(f) < 5 || f[1] != "file" || f[3] != "line" {
			continue
		}
		if seen[f[2]] == nil {
			seen[f[2]] = map[string]bool{}
		}
		seen[f[2]][f[4]] = true
	}
	n := 0
	for _, l := range seen {
		if len(l) >= lines {
			n++
		}
	}
	return n
}

// procCPU is pid's user and system CPU time so far.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	cpu, err := procstat.CPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}

// procStatus reads the named fields of /proc/<pid>/status (sizes in bytes).
func procStatus(b *testing.B, pid int, names ...string) map[string]int64 {
	b.Helper()
	st, err := procstat.Status(pid, names...)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// procMem is pid's resident memory now (VmRSS) and its high-water mark
// (VmHWM), in MiB.
func procMem(b *testing.B, pid int) (rss, hwm float64) {
	b.Helper()
	st := procStatus(b, pid, "VmRSS", "VmHWM")
	return float64(st["VmRSS"]) / (1 << 20), float64(st["VmHWM"]) / (1 << 20)
}

// metricValue reads one unlabelled metric from the agent's /metrics; -1
// (logged) if the agent does not answer: one that ran out of descriptors
// cannot accept the connection, which is a figure too.
func metricValue(b *testing.B, listen, name string) float64 {
	b.Helper()
	code, body := testenv.HTTPGet("http://" + listen + "/metrics")
	if code != 200 {
		b.Logf("%s: /metrics answered status %d: %s", name, code, body)
		return -1
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("%s %q: %v", name, v, err)
			}
			return f
		}
	}
	b.Fatalf("no %s on /metrics", name)
	return 0
}

// saveHeapProfile writes the agent's heap profile (/debug/pprof/heap) to
// out, relative to cmd/logagent: `go tool pprof -sample_index=inuse_space
// -top FILE` shows what holds the idle agent's memory.
func saveHeapProfile(b *testing.B, listen, out string) {
	b.Helper()
	code, body := testenv.HTTPGet("http://" + listen + "/debug/pprof/heap?gc=1")
	if code != 200 {
		b.Logf("heap profile: status %d", code)
		return
	}
	if err := os.WriteFile(out, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("heap profile of the idle agent written to %s", out)
}

// envString is the environment variable name, or def if it is empty.
func envString(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
