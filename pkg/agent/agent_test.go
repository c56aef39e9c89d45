package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

func TestTwoFilesInOrderWithHeaders(t *testing.T) {
	e := newEnv(t)
	e.write("a.log", header("a"))
	e.write("b.log", header("b"))
	e.writeLines("a.log", 0, 300)
	e.writeLines("b.log", 0, 200)
	e.putTopic("web", topics.Config{Paths: []string{e.dir + "/*.log"}, KafkaTopic: "web-logs"})
	ag := e.startAgent("10.0.0.1")
	fa := e.waitSeen("web", "10.0.0.1", "a.log")
	fb := e.waitSeen("web", "10.0.0.1", "b.log")
	e.assign("web", "10.0.0.1", fa)
	e.assign("web", "10.0.0.1", fb)
	e.writeLines("a.log", 300, 400) // appended while tailing
	recs := e.waitRecords("web-logs", 602, 20*time.Second)
	require.Equal(t, 602, len(recs), "no duplicates without a crash")
	files := e.byFile(recs) // checks every offset header against the file
	require.Len(t, files, 2)
	for path, rs := range files {
		require.Equal(t, map[string]int{e.path("a.log"): 401, e.path("b.log"): 201}[path], len(rs), path)
		// One file's lines are in one partition (key=file), in file order.
		var last int64 = -1
		for _, r := range rs {
			require.Equal(t, rs[0].Partition, r.Partition)
			off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
			require.Greater(t, off, last, "file order")
			last = off
			require.Equal(t, "10.0.0.1", r.Headers["host"])
			require.Equal(t, "web", r.Headers["topic"])
			require.Equal(t, r.Key, r.Headers["file"], "key=file: the record key is the file key")
		}
	}
	require.Equal(t, fa.Key, files[e.path("a.log")][0].Headers["file"])
	// Checkpoints reach the end of each file.
	testenv.WaitFor(t, 10*time.Second, "checkpoints at the end of both files", func() bool {
		ca, ok1 := e.checkpoint("web", fa.Key)
		cb, ok2 := e.checkpoint("web", fb.Key)
		return ok1 && ok2 && ca.Offset == fileSize(t, e.path("a.log")) && cb.Offset == fileSize(t, e.path("b.log"))
	})
	require.NoError(t, ag.stop())
}

func TestRestartResumesFromCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.write("app.log", header("app"))
	e.writeLines("app.log", 0, 1000)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	ag := e.startAgent("h1")
	f := e.waitSeen("app", "h1", "app.log")
	e.assign("app", "h1", f)
	e.waitRecords("app", 1001, 20*time.Second)
	testenv.WaitFor(t, 10*time.Second, "checkpoint at the end", func() bool {
		cp, ok := e.checkpoint("app", f.Key)
		return ok && cp.Offset == fileSize(t, e.path("app.log"))
	})
	require.NoError(t, ag.stop())

	// Lines written while no agent runs, then a fresh agent on the same state.
	e.writeLines("app.log", 1000, 1500)
	e.startAgent("h1")
	recs := e.waitRecords("app", 1501, 20*time.Second)
	requireEachOnce(t, recs, 1501, "no line lost")
	e.byFile(recs)
}

func TestReleaseHandsOverWithoutGapOrOverlap(t *testing.T) {
	e := newEnv(t)
	e.write("shared.log", header("shared"))
	e.writeLines("shared.log", 0, 500)
	e.putTopic("sh", topics.Config{Paths: []string{e.dir + "/shared.log"}, Shared: true})
	a1 := e.startAgent("h1")
	e.startAgent("h2")
	f1 := e.waitSeen("sh", "h1", "shared.log")
	f2 := e.waitSeen("sh", "h2", "shared.log")
	require.Equal(t, f1.Key, f2.Key, "a shared file has one key on every member")
	k1 := e.assign("sh", "h1", f1)
	e.waitRecords("sh", 501, 20*time.Second)

	// Keep writing while the leader moves the file from h1 to h2.
	e.writeLines("shared.log", 500, 700)
	e.revoke(k1, f1, "h2")
	testenv.WaitFor(t, 10*time.Second, "h1 to release", func() bool { return !e.exists(k1) })
	cp, ok := e.checkpoint("sh", f1.Key)
	require.True(t, ok)
	shipped := e.records("sh")
	var lastEnd int64
	for _, r := range shipped {
		off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
		lastEnd = max(lastEnd, off+int64(len(r.Value))+1)
	}
	require.Equal(t, lastEnd, cp.Offset, "the final checkpoint is the end of the last line shipped")
	require.Equal(t, 0.0, counterValue(t, a1.reg, "logagent_releases_total", "released")-1)

	e.writeLines("shared.log", 700, 800)
	e.assign("sh", "h2", f2)
	recs := e.waitRecords("sh", 801, 20*time.Second)
	requireEachOnce(t, recs, 801, "no gap")
	for _, r := range recs {
		off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
		want := "h1"
		if off >= cp.Offset {
			want = "h2"
		}
		require.Equal(t, want, r.Headers["host"], "offset %d shipped by the wrong agent", off)
	}
}

func TestAssignmentDeletedStopsAtOnce(t *testing.T) {
	e := newEnv(t)
	e.write("x.log", header("x"))
	e.write("y.log", header("y"))
	e.writeLines("x.log", 0, 10)
	e.putTopic("x", topics.Config{Paths: []string{e.dir + "/*.log"}})
	ag := e.startAgent("h1")
	fx := e.waitSeen("x", "h1", "x.log")
	fy := e.waitSeen("x", "h1", "y.log")
	kx := e.assign("x", "h1", fx)
	e.assign("x", "h1", fy)
	e.waitRecords("x", 12, 10*time.Second)
	testenv.WaitFor(t, 5*time.Second, "x checkpointed", func() bool {
		cp, ok := e.checkpoint("x", fx.Key)
		return ok && cp.Offset == fileSize(t, e.path("x.log"))
	})
	// The assignment disappears without a revoke mark (an operator, a
	// handover timeout): the agent stops reading x at once.
	_, err := e.cli.Delete(context.Background(), kx)
	require.NoError(t, err)
	testenv.WaitFor(t, 5*time.Second, "x's tailer to stop", func() bool {
		// y's run stays, tailing or parked (quiet for --close-inactive).
		return gaugeValue(t, ag.reg, "logagent_tailers")+gaugeValue(t, ag.reg, "logagent_files_parked") == 1
	})
	cpBefore, _ := e.checkpoint("x", fx.Key)
	e.writeLines("x.log", 10, 20)
	e.writeLines("y.log", 0, 10)
	// y's lines arriving proves the agent kept working meanwhile.
	e.waitRecords("x", 22, 10*time.Second)
	for _, r := range e.records("x") {
		off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
		if r.Headers["file"] == fx.Key {
			require.Less(t, off, cpBefore.Offset, "x was shipped after its assignment was deleted")
		}
	}
	cpAfter, _ := e.checkpoint("x", fx.Key)
	require.Equal(t, cpBefore, cpAfter, "nothing is written for a file taken away")
}

func TestLeaseLostReRegisters(t *testing.T) {
	e := newEnv(t)
	e.write("l.log", header("l"))
	e.putTopic("l", topics.Config{Paths: []string{e.dir + "/l.log"}})
	ag := e.startAgent("h1")
	e.waitSeen("l", "h1", "l.log")
	resp, err := e.cli.Get(context.Background(), e.ks.Heartbeat("l", "h1"))
	require.NoError(t, err)
	lease := resp.Kvs[0].Lease
	_, err = e.cli.Revoke(context.Background(), clientv3LeaseID(lease))
	require.NoError(t, err)
	testenv.WaitFor(t, 10*time.Second, "heartbeat on a new lease", func() bool {
		resp, err := e.cli.Get(context.Background(), e.ks.Heartbeat("l", "h1"))
		require.NoError(t, err)
		return len(resp.Kvs) == 1 && resp.Kvs[0].Lease != lease
	})
	require.GreaterOrEqual(t, counterValue(t, ag.reg, "logagent_lease_losses_total", ""), 1.0)
	// Ready once the new lease's first renewal proved it alive, which can
	// come a moment after the heartbeat was written on it.
	testenv.WaitFor(t, 10*time.Second, "ready on the new lease", func() bool { return ag.a.Ready() == nil })
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	return int64(len(mustRead(t, path)))
}

func TestAgentConfigErrors(t *testing.T) {
	_, err := New(Config{})
	require.ErrorIs(t, err, ErrConfig)
	e := newEnv(t)
	sh := e.startAgent("ok").ship
	_, err = New(Config{Client: e.cli, Shipper: sh, ID: "bad id"})
	require.ErrorContains(t, err, "--id")
	_, err = New(Config{Client: e.cli, Shipper: sh, ID: "x", AllowPaths: []string{"relative"}})
	require.ErrorContains(t, err, `"relative"`)
	_, err = New(Config{Client: e.cli, Shipper: sh, ID: "x", ScanInterval: -time.Second})
	require.ErrorContains(t, err, "--scan-interval")
}

// TestRotatedWhileDownIsFinishedAfterRestart: the file was renamed out of
// the glob while the agent was down; after the restart the agent finds it
// by identity, keeps it in its heartbeat and ships the rest of it.
func TestRotatedWhileDownIsFinishedAfterRestart(t *testing.T) {
	e := newEnv(t)
	e.write("app.log", header("gen1"))
	e.writeLines("app.log", 0, 100)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	ag := e.startAgent("h1")
	old := e.waitSeen("app", "h1", "app.log")
	e.assign("app", "h1", old)
	e.waitRecords("app", 101, 20*time.Second)
	require.NoError(t, ag.stop())

	// While the agent is down: more lines, then rename rotation.
	e.writeLines("app.log", 100, 150)
	require.NoError(t, renameFile(e.path("app.log"), e.path("app.log.1")))
	e.write("app.log", header("gen2"))
	e.writeLines("app.log", 0, 10)

	e.startAgent("h1")
	testenv.WaitFor(t, 10*time.Second, "the rotated file in the heartbeat", func() bool {
		_, _, ok := e.listing("app", old.Key, "h1")
		return ok
	})
	next := e.waitSeen("app", "h1", "app.log")
	require.NotEqual(t, old.Key, next.Key)
	e.assign("app", "h1", next)
	recs := e.waitRecords("app", 151+11, 20*time.Second)
	requireEachOnce(t, recs, 162, "the rotated file's tail and the new file, nothing lost")
}

// TestMultilineJoinsStackTraces: a Java stack trace is one record; the
// last event is shipped once the topic's timeout passes without a new line;
// a runaway event is cut at max lines and flagged; offsets stay exact.
func TestMultilineJoinsStackTraces(t *testing.T) {
	e := newEnv(t)
	trace := "2026-11-21 10:00:01 ERROR request failed\n" +
		"java.lang.IllegalStateException: boom\n" +
		"\tat com.example.Handler.handle(Handler.java:42)\n" +
		"\tat com.example.Server.run(Server.java:7)\n" +
		"Caused by: java.io.IOException: closed\n" +
		"\t... 2 more\n"
	e.write("java.log", "2026-11-21 10:00:00 INFO started, with a header long enough\n")
	e.write("java.log", trace)
	e.write("java.log", "2026-11-21 10:00:02 INFO runaway follows\n")
	for i := range 7 {
		e.write("java.log", fmt.Sprintf("\tframe %d\n", i))
	}
	e.write("java.log", "2026-11-21 10:00:03 INFO last\n")
	e.putTopic("java", topics.Config{Paths: []string{e.dir + "/java.log"}, Multiline: &topics.Multiline{
		Pattern: `^\d{4}-\d{2}-\d{2}`, Negate: true, Match: topics.MatchAfter, MaxLines: 6, Timeout: topics.Duration(200 * time.Millisecond)}})
	e.startAgent("h1")
	f := e.waitSeen("java", "h1", "java.log")
	e.assign("java", "h1", f)
	// 1 + 1 + (runaway of 8 lines: 6 + 2) + 1 (by timeout).
	recs := e.waitRecords("java", 5, 20*time.Second)
	require.Equal(t, 5, len(recs))
	e.byFile(recs) // every record's offset header points at its bytes
	byOffset := map[int64]string{}
	for _, r := range recs {
		off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
		byOffset[off] = r.Value
	}
	require.Contains(t, byOffset, int64(60))
	require.Equal(t, strings.TrimSuffix(trace, "\n"), byOffset[60], "the stack trace is one record")
	var cut, last int
	for _, r := range recs {
		if r.Headers["multiline_cut"] == "true" {
			cut++
			require.Equal(t, "6", r.Headers["lines"])
		}
		if r.Value == "2026-11-21 10:00:03 INFO last" {
			last++
		}
	}
	require.Equal(t, 1, cut, "the runaway event is cut at max lines and flagged")
	require.Equal(t, 1, last, "the last event is shipped after the timeout")
	testenv.WaitFor(t, 10*time.Second, "checkpoint at the end of the file", func() bool {
		cp, ok := e.checkpoint("java", f.Key)
		return ok && cp.Offset == fileSize(t, e.path("java.log"))
	})
}

// TestSameFirstBytesAreTwoFiles: two files whose first kilobytes are
// identical are two files (by inode), and both are shipped in full.
func TestSameFirstBytesAreTwoFiles(t *testing.T) {
	e := newEnv(t)
	head := strings.Repeat("identical first kilobyte of both files\n", 60) // > 2 KiB
	for _, n := range []string{"a.log", "b.log"} {
		e.write(n, head)
		e.writeLines(n, 0, 100)
	}
	e.putTopic("same", topics.Config{Paths: []string{e.dir + "/*.log"}})
	e.startAgent("h1", func(c *Config, _ *ship.Config) { c.FingerprintBytes = 1024 })
	fa := e.waitSeen("same", "h1", "a.log")
	fb := e.waitSeen("same", "h1", "b.log")
	ia, err := fileid.Of(mustOpen(t, e.path("a.log")), 1024, false)
	require.NoError(t, err)
	ib, err := fileid.Of(mustOpen(t, e.path("b.log")), 1024, false)
	require.NoError(t, err)
	require.Equal(t, ia.Fingerprint, ib.Fingerprint, "the same first bytes")
	require.NotEqual(t, fa.Key, fb.Key, "two files all the same")
	e.assign("same", "h1", fa)
	e.assign("same", "h1", fb)
	want := 2 * (60 + 100)
	recs := e.waitRecords("same", want, 20*time.Second)
	requireEachOnce(t, recs, want, "every line")
	require.Len(t, e.byFile(recs), 2)
}

// TestTruncatedAndRewrittenIsReadFromZero: a file truncated to 0 and
// rewritten with other content is a new file, read from its first byte.
func TestTruncatedAndRewrittenIsReadFromZero(t *testing.T) {
	e := newEnv(t)
	e.write("app.log", header("before"))
	e.writeLines("app.log", 0, 50)
	e.putTopic("tr", topics.Config{Paths: []string{e.dir + "/app.log"}})
	e.startAgent("h1")
	f1 := e.waitSeen("tr", "h1", "app.log")
	e.assign("tr", "h1", f1)
	e.waitRecords("tr", 51, 20*time.Second)
	// Truncate in place and rewrite, shorter than before.
	require.NoError(t, os.Truncate(e.path("app.log"), 0))
	e.write("app.log", header("after"))
	e.writeLines("app.log", 0, 10)
	var f2 protocol.SeenFile
	testenv.WaitFor(t, 10*time.Second, "the rewritten file under a new key", func() bool {
		f2 = e.waitSeen("tr", "h1", "app.log")
		return f2.Key != f1.Key
	})
	e.assign("tr", "h1", f2)
	recs := e.waitRecords("tr", 51+11, 20*time.Second)
	var fromNew []int64
	for _, r := range recs {
		if r.Headers["file"] == f2.Key {
			off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
			fromNew = append(fromNew, off)
		}
	}
	require.Len(t, fromNew, 11)
	require.Contains(t, fromNew, int64(0), "the new content is read from 0")
	var newRecs []testenv.Record
	for _, r := range recs {
		if r.Headers["file"] == f2.Key {
			newRecs = append(newRecs, r)
		}
	}
	e.byFile(newRecs) // the new key's offsets point into the new content
}

// TestConfigChangeRestartsTailer: a changed topic config (here its Kafka
// topic) applies to the lines that follow, without a gap; writing the same
// config again changes nothing.
func TestConfigChangeRestartsTailer(t *testing.T) {
	e := newEnv(t)
	e.write("c.log", header("c"))
	e.writeLines("c.log", 0, 10)
	e.putTopic("cfg", topics.Config{Paths: []string{e.dir + "/c.log"}, KafkaTopic: "first"})
	e.startAgent("h1")
	f := e.waitSeen("cfg", "h1", "c.log")
	e.assign("cfg", "h1", f)
	e.waitRecords("first", 11, 20*time.Second)
	e.putTopic("cfg", topics.Config{Paths: []string{e.dir + "/c.log"}, KafkaTopic: "first"}) // same content
	e.putTopic("cfg", topics.Config{Paths: []string{e.dir + "/c.log"}, KafkaTopic: "second"})
	testenv.WaitFor(t, 10*time.Second, "the new config applied", func() bool {
		e.writeLines("c.log", 10, 11) // a probe line each poll: some reach "second"
		return len(e.records("second")) > 0
	})
	first, second := e.records("first"), e.records("second")
	seen, dups := distinctValues(append(first, second...))
	require.Zero(t, dups, "a config change repeats no line")
	require.Equal(t, len(first)+len(second), len(seen))
	// And skips none: the shipped lines tile the file from 0.
	all := append(first, second...)
	ends := map[int64]int64{}
	for _, r := range all {
		off, _ := strconv.ParseInt(r.Headers["offset"], 10, 64)
		ends[off] = off + int64(len(r.Value)) + 1
	}
	for off, n := int64(0), 0; n < len(all); n++ {
		end, ok := ends[off]
		require.True(t, ok, "no record starts at offset %d", off)
		off = end
	}
}

// TestRotatedFileHandoverSurvivesLeaderLoss is the loss the fault system
// test found: the leader revokes a file that was just rotated out of the
// globs (app.log -> app.log.1) to hand it from h1 to h2, h1 releases it,
// and the leader dies before it assigns h2. The next leader knows only the
// files that heartbeats list, so a file nobody lists is orphaned and its
// last lines lost. Every agent that saw it therefore lists it until its
// checkpoint covers it, also when it grows again after it was covered
// (its writer appending after the rename); the next leader assigns it, and
// nothing is lost.
func TestRotatedFileHandoverSurvivesLeaderLoss(t *testing.T) {
	e := newEnv(t)
	e.putTopic("sh", topics.Config{Paths: []string{e.dir + "/app.log"}, Shared: true})
	e.write("app.log", header("gen1"))
	e.writeLines("app.log", 0, 100)
	// Without the directory watcher, which would also hold the renamed
	// file open for a while: the rule under test is the scans'.
	noWatch := func(c *Config, _ *ship.Config) { c.NoDirWatch = true }
	e.startAgent("h1", noWatch)
	e.startAgent("h2", noWatch)
	f := e.waitSeen("sh", "h1", "app.log")
	e.waitSeen("sh", "h2", "app.log")
	k1 := e.assign("sh", "h1", f)
	e.waitRecords("sh", 101, 20*time.Second)

	// Rotation: the file leaves the globs.
	require.NoError(t, os.Rename(e.path("app.log"), e.path("app.log.1")))
	e.revoke(k1, f, "h2")
	testenv.WaitFor(t, 10*time.Second, "h1 to release", func() bool { return !e.exists(k1) })
	// Shipped to its end so far: nobody lists it.
	listed := func() bool {
		_, _, ok := e.listing("sh", f.Key, "h1", "h2")
		return ok
	}
	testenv.WaitFor(t, 10*time.Second, "the shipped file to leave the heartbeats", func() bool { return !listed() })
	// Its writer still appends to it (it has not reopened app.log yet).
	e.writeLines("app.log.1", 100, 150)

	// The leader is gone. Its successor sees the file in a heartbeat.
	reporter := ""
	testenv.WaitFor(t, 10*time.Second, "an agent to list the rotated, unfinished file", func() bool {
		seen, agent, ok := e.listing("sh", f.Key, "h2", "h1")
		// At its new path: a heartbeat written before the agent's scan
		// saw the rotation does not count.
		reporter = agent
		return ok && seen.Path == e.path("app.log.1")
	})
	e.assign("sh", reporter, f)
	recs := e.waitRecords("sh", 151, 20*time.Second)
	requireEachOnce(t, recs, 151, "no gap")

	// Once its checkpoint covers it, nobody lists it any more.
	testenv.WaitFor(t, 20*time.Second, "the finished file to leave the heartbeats", func() bool { return !listed() })
}

// TestRotatedWhileDownAndUnassignedIsReported: the agent was down longer
// than its lease, so the leader deleted its assignments (owner gone), and
// meanwhile the file it was reading rotated out of the globs with lines
// it had not shipped. After the restart the agent knows the file only from
// its checkpoint: it lists it (found by identity), gets it assigned again
// and ships the rest.
func TestRotatedWhileDownAndUnassignedIsReported(t *testing.T) {
	e := newEnv(t)
	e.write("app.log", header("gen1"))
	e.writeLines("app.log", 0, 100)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	ag := e.startAgent("h1")
	old := e.waitSeen("app", "h1", "app.log")
	key := e.assign("app", "h1", old)
	e.waitRecords("app", 101, 20*time.Second)
	require.NoError(t, ag.stop())

	e.writeLines("app.log", 100, 150)
	require.NoError(t, renameFile(e.path("app.log"), e.path("app.log.1")))
	e.write("app.log", header("gen2"))
	_, err := e.cli.Delete(context.Background(), key)
	require.NoError(t, err)

	e.startAgent("h1")
	testenv.WaitFor(t, 10*time.Second, "the rotated, unfinished file in the heartbeat, where it is now", func() bool {
		f, _, ok := e.listing("app", old.Key, "h1")
		return ok && f.Path == e.path("app.log.1")
	})
	e.assign("app", "h1", old)
	recs := e.waitRecords("app", 151, 20*time.Second)
	requireEachOnce(t, recs, 151, "the rotated file's tail, nothing lost")
}

// TestPartEndingEndsRun: when a part of the agent ends on its own (here
// its shipper, which refuses to run twice), Run returns with the reason,
// instead of waiting for ever at the clean stop on a part whose end the
// control loop already took.
func TestPartEndingEndsRun(t *testing.T) {
	e := newEnv(t)
	kcfg := ship.DefaultConfig()
	kcfg.Brokers = e.kafka.Brokers()
	sh, err := ship.New(kcfg, prometheus.NewRegistry(), testLogger("h1"))
	require.NoError(t, err)
	shipCtx, stopShip := context.WithCancel(context.Background())
	shipDone := make(chan error, 1)
	go func() { shipDone <- sh.Run(shipCtx) }()
	t.Cleanup(func() {
		stopShip()
		<-shipDone
	})
	a, err := New(Config{Client: e.cli, Space: e.ks, ID: "h1", AllowPaths: []string{e.dir}, Shipper: sh,
		Registerer: prometheus.NewRegistry(), Logger: testLogger("h1")})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- a.Run(ctx) }()
	select {
	case err := <-runDone:
		require.ErrorIs(t, err, ship.ErrRunning)
		require.Contains(t, err.Error(), "agent: shipper stopped")
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its shipper ended")
	}
}

// TestFinishedRotatedFileGrowingAgainIsReadOn: the writer appends to the
// rotated file after the agent finished it (idle for --rotated-idle, its
// end shipped and listed no more): the agent reads on from where it was.
func TestFinishedRotatedFileGrowingAgainIsReadOn(t *testing.T) {
	e := newEnv(t)
	e.write("app.log", header("gen1"))
	e.writeLines("app.log", 0, 50)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	e.startAgent("h1")
	old := e.waitSeen("app", "h1", "app.log")
	e.assign("app", "h1", old)
	e.waitRecords("app", 51, 20*time.Second)
	require.NoError(t, renameFile(e.path("app.log"), e.path("app.log.1")))
	testenv.WaitFor(t, 20*time.Second, "the finished file to leave the heartbeat", func() bool {
		_, _, ok := e.listing("app", old.Key, "h1")
		return !ok
	})
	e.writeLines("app.log.1", 50, 70)
	recs := e.waitRecords("app", 71, 20*time.Second)
	requireEachOnce(t, recs, 71, "the lines appended after the finish arrive")
}

// TestAssignedFileDeletedWhileDownCountsLostBytes: the agent stopped with
// lines of an assigned file read but not acknowledged (Kafka refused them),
// and the file was deleted before it came back: nobody can ship those
// lines, and the restarted agent counts them as lost, as its last
// checkpoint knew them (size minus offset).
func TestAssignedFileDeletedWhileDownCountsLostBytes(t *testing.T) {
	e := newEnv(t)
	_, size, cp := e.deletedWhileDown()
	ag := e.startAgent("h1")
	testenv.WaitFor(t, 10*time.Second, "the deleted file's bytes counted", func() bool {
		return counterValue(t, ag.reg, "logagent_lost_bytes_total", "") > 0
	})
	require.Equal(t, float64(size-cp.Offset), counterValue(t, ag.reg, "logagent_lost_bytes_total", ""))
}

// deletedWhileDown runs an agent that read lines of an assigned file which
// Kafka refused, stops it, and deletes the file: it returns the file's size
// and the checkpoint the agent left (which knows that size).
func (e *env) deletedWhileDown() (f protocol.SeenFile, size int64, cp protocol.Checkpoint) {
	t := e.t
	e.write("app.log", header("gone"))
	e.writeLines("app.log", 0, 50)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	ag := e.startAgent("h1", func(c *Config, _ *ship.Config) { c.StopTimeout = 500 * time.Millisecond })
	f = e.waitSeen("app", "h1", "app.log")
	e.assign("app", "h1", f)
	e.waitRecords("app", 51, 20*time.Second)

	fault := e.kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	e.writeLines("app.log", 50, 80)
	size = fileSize(t, e.path("app.log"))
	testenv.WaitFor(t, 10*time.Second, "a checkpoint that knows the unshipped size", func() bool {
		cp, ok := e.checkpoint("app", f.Key)
		return ok && cp.Size == size && cp.Offset < size
	})
	require.NoError(t, ag.stop())
	fault.Remove()
	cp, _ = e.checkpoint("app", f.Key)
	require.NoError(t, os.Remove(e.path("app.log")))
	return f, size, cp
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}
