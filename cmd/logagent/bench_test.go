package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/topics"
)

// BenchmarkShipFile ships a generated access log (BENCH_LINES lines, default
// 1,000,000, about 150 MB) through the real logagent binary, run as a child
// process, into the in-process broker with acks=all, and prints lines/s,
// MB/s, the agent's CPU seconds per million lines and its peak memory. If
// kcat is installed it ships the same file with `kcat -P -l` (acks=all, the
// same compression: BENCH_COMPRESSION, default lz4 as the agent's) to the
// same broker and prints the ratios. Run with `make bench`.
//
// Single runs scatter by ±15 % on a shared machine, kcat's as much as the
// agent's, so each iteration makes BENCH_RUNS (default 5) runs of the
// agent, each followed by one of kcat, logs every run and reports the
// medians (of the ratios, the median of each pair's ratio).
func BenchmarkShipFile(b *testing.B) {
	if testing.Short() {
		b.Skip("ships a 150 MB file")
	}
	lines, runs := envInt(b, "BENCH_LINES", 1_000_000), envInt(b, "BENCH_RUNS", 5)
	profile := os.Getenv("BENCH_CPUPROFILE") // of the first run
	env := &benchEnv{lines: lines, dir: b.TempDir()}
	env.path = filepath.Join(env.dir, "access.log")
	env.size = writeAccessLog(b, env.path, lines)
	env.bin = buildAgent(b)
	env.etcd = testenv.StartEtcd(b)
	env.kafka = testenv.StartKafka(b)
	kcat, kcatErr := exec.LookPath("kcat")
	if kcatErr != nil {
		b.Log("kcat not installed (Debian package kcat): no comparison")
	}
	b.ResetTimer()
	for i := range b.N {
		var lps, mbps, cpu, peak, xLines, xCPU []float64
		for j := range runs {
			// Each run ships the file from the start into a topic of its own.
			topic := fmt.Sprintf("bench-%d-%d", i, j)
			a := env.shipWithAgent(b, topic, profile)
			profile = ""
			lps = append(lps, float64(lines)/a.took.Seconds())
			mbps = append(mbps, float64(env.size)/a.took.Seconds()/1e6)
			cpu = append(cpu, a.cpu.Seconds()/(float64(lines)/1e6))
			peak = append(peak, a.peak)
			// One line per run: the testing package prints only the first
			// ten lines a benchmark logs.
			line := fmt.Sprintf("run %d: logagent: %d lines (%.1f MB) in %v, CPU %v, peak RSS %.1f MiB", j+1, lines,
				float64(env.size)/1e6, a.took.Round(time.Millisecond), a.cpu.Round(time.Millisecond), a.peak)
			if kcatErr == nil {
				k := env.shipWithKcat(b, kcat, topic+"-kcat")
				xLines = append(xLines, k.took.Seconds()/a.took.Seconds())
				xCPU = append(xCPU, a.cpu.Seconds()/k.cpu.Seconds())
				// kcat's Maxrss may include this process's size at the fork.
				line += fmt.Sprintf("; kcat -P -l (compression %s): %v, CPU %v, max RSS (rusage) %.1f MiB; logagent lines/s = %.2fx kcat's, CPU = %.2fx kcat's",
					benchCompression(), k.took.Round(time.Millisecond), k.cpu.Round(time.Millisecond), k.peak, xLines[j], xCPU[j])
			}
			b.Log(line)
			env.deleteTopics(b, topic, topic+"-kcat") // the broker holds every record in memory
		}
		b.ReportMetric(median(lps), "lines/s")
		b.ReportMetric(median(mbps), "MB/s")
		b.ReportMetric(median(cpu), "cpu-s/Mlines")
		b.ReportMetric(median(peak), "peak-MiB")
		if kcatErr == nil {
			b.ReportMetric(median(xLines), "x-kcat-lines/s")
			b.ReportMetric(median(xCPU), "x-kcat-cpu")
		}
	}
}

// benchEnv is what every run of BenchmarkShipFile shares: the file, the
// agent binary, etcd and the broker.
type benchEnv struct {
	lines     int
	dir, path string
	size      int64
	bin       string
	etcd      *testenv.Etcd
	kafka     *testenv.Kafka
}

// shipped is one run's figures: wall time until the broker held every
// line, the shipper's CPU time, and its peak memory in MiB.
type shipped struct {
	took, cpu time.Duration
	peak      float64
}

// shipWithAgent ships the file into topic with a fresh agent process and
// stops it; with profile set, it writes a CPU profile of the agent there.
func (env *benchEnv) shipWithAgent(b *testing.B, topic, profile string) shipped {
	b.Helper()
	cli, ks, k := env.etcd.Client(), keyspace.Space{}, env.kafka
	for _, p := range []string{ks.AssignPrefix(), ks.OffsetsPrefix()} {
		if _, err := cli.Delete(context.Background(), p, clientv3.WithPrefix()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := topics.NewStore(cli, ks).Put(context.Background(), "bench", topics.Config{Paths: []string{env.path}, KafkaTopic: topic}); err != nil {
		b.Fatal(err)
	}
	// Topics exist in production; an auto-created one costs the first
	// write a metadata refresh (kafka-go's transport caches metadata for
	// about 6 s), which is not what this measures.
	createTopics(b, k.Brokers(), topic)
	listen := testenv.FreeAddr(b)
	cmd := exec.Command(env.bin, "--etcd-endpoints", env.etcd.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","),
		"--id", "bench", "--listen", listen, "--allow-path", env.dir, "--scan-interval", "100ms", "--state-dir", b.TempDir(),
		"--log-level", "warn", "--kafka-compression", benchCompression(), "--pprof")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	f := firstFile(b, cli, ks, "bench", "bench")
	profiled := func() {}
	if profile != "" {
		profiled = startCPUProfile(b, listen, profile)
	}
	start := time.Now()
	assign(b, cli, ks, "bench", "bench", f)
	waitRecords(b, k.Brokers(), topic, int64(env.lines))
	took := time.Since(start)
	profiled()
	// The agent's own high-water mark: the rusage of a child reports the
	// parent's resident size at fork if that was larger (this test
	// process holds the broker's records).
	peak := peakRSS(b, cmd.Process.Pid)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	return shipped{took: took, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), peak: peak}
}

// shipWithKcat ships the file into topic with kcat, with the agent's
// compression: like for like.
func (env *benchEnv) shipWithKcat(b *testing.B, kcat, topic string) shipped {
	b.Helper()
	createTopics(b, env.kafka.Brokers(), topic)
	start := time.Now()
	args := []string{"-P", "-b", env.kafka.Brokers()[0], "-t", topic, "-l", "-X", "acks=all"}
	if c := benchCompression(); c != "none" {
		args = append(args, "-z", c)
	}
	kc := exec.Command(kcat, append(args, env.path)...)
	kc.Stderr = os.Stderr
	if err := kc.Run(); err != nil {
		b.Fatalf("kcat: %v", err)
	}
	waitRecords(b, env.kafka.Brokers(), topic, int64(env.lines))
	took := time.Since(start)
	// Maxrss may be this process's size at the fork rather than kcat's.
	ru := kc.ProcessState.SysUsage().(*syscall.Rusage)
	return shipped{took: took, cpu: kc.ProcessState.UserTime() + kc.ProcessState.SystemTime(), peak: float64(ru.Maxrss) / 1024}
}

// deleteTopics drops a run's topics, so that the broker's memory does not
// grow run after run.
func (env *benchEnv) deleteTopics(b *testing.B, names ...string) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(env.kafka.Brokers()...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).DeleteTopics(context.Background(), names...); err != nil {
		b.Fatal(err)
	}
}

// envInt is the environment variable name as a positive integer, or def
// if it is not set.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// median is the middle of xs (the mean of the two middle ones for an even
// count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// peakRSS is the high-water mark of pid's resident memory (VmHWM), in MiB.
func peakRSS(b *testing.B, pid int) float64 {
	b.Helper()
	_, hwm := procMem(b, pid)
	return hwm
}

// startCPUProfile starts a CPU profile of the agent (its
// /debug/pprof/profile) for BENCH_CPUPROFILE_SECONDS (default 5) from now
// and returns a function that waits for it and writes it to out (relative
// to cmd/logagent, go test's working directory). Analyse with `go tool
// pprof -top FILE`: the profile carries its symbols.
func startCPUProfile(b *testing.B, listen, out string) (wait func()) {
	b.Helper()
	secs := strconv.Itoa(envInt(b, "BENCH_CPUPROFILE_SECONDS", 5))
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + listen + "/debug/pprof/profile?seconds=" + secs)
		if err != nil {
			done <- err
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(out)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		done <- errors.Join(err, f.Close())
	}()
	return func() {
		if err := <-done; err != nil {
			b.Fatalf("CPU profile: %v", err)
		}
		b.Logf("CPU profile of the agent written to %s", out)
	}
}

// writeAccessLog writes n typical access-log lines (about 150 bytes each)
// and returns the file's size.
func writeAccessLog(b *testing.B, path string, n int) int64 {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	methods := []string{"GET", "GET", "GET", "POST", "PUT"}
	for i := range n {
		fmt.Fprintf(w, "10.%d.%d.%d - - [21/Nov/2026:10:%02d:%02d +0000] \"%s /api/v1/items/%d?page=%d HTTP/1.1\" %d %d \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" %d\n",
			r.IntN(256), r.IntN(256), r.IntN(256), (i/60)%60, i%60, methods[r.IntN(len(methods))], r.IntN(100000), r.IntN(50),
			[]int{200, 200, 200, 304, 404, 500}[r.IntN(6)], r.IntN(50000), i)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	fi, _ := f.Stat()
	f.Close()
	return fi.Size()
}

// waitRecords waits until topic holds n records (by its end offsets).
func waitRecords(b *testing.B, brokers []string, topic string, n int64) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	testenv.WaitFor(b, 10*time.Minute, fmt.Sprintf("%d records in %s", n, topic), func() bool {
		return endOffsets(adm, topic) >= n
	})
}

// endOffsets is the number of records in topic (the sum of its
// partitions' end offsets); 0 if they cannot be listed.
func endOffsets(adm *kadm.Client, topic string) int64 {
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		return 0
	}
	var got int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			got += o.Offset
		}
	})
	return got
}

// benchCompression is BENCH_COMPRESSION, default lz4 (the agent's default).
func benchCompression() string {
	if c := os.Getenv("BENCH_COMPRESSION"); c != "" {
		return c
	}
	return "lz4"
}

func createTopics(b *testing.B, brokers []string, names ...string) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 3, 1, nil, names...); err != nil {
		b.Fatal(err)
	}
}
