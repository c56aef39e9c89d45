package agent

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

func TestKafkaOutageBlocksThenResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 10 s outage")
	}
	e := newEnv(t)
	const bound = 64 << 10
	e.write("app.log", header("app"))
	e.writeLines("app.log", 0, 100)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	ag := e.startAgent("h1", func(_ *Config, k *ship.Config) { k.MaxInflightBytes = bound })
	f := e.waitSeen("app", "h1", "app.log")
	e.assign("app", "h1", f)
	e.waitRecords("app", 101, 20*time.Second)
	testenv.WaitFor(t, 5*time.Second, "checkpoint before the outage", func() bool {
		cp, ok := e.checkpoint("app", f.Key)
		return ok && cp.Offset == fileSize(t, e.path("app.log"))
	})
	cpBefore, _ := e.checkpoint("app", f.Key)

	// Kafka refuses every write for 10 s while the writer keeps going.
	fault := e.kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	var maxInflight atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				if v := ag.ship.InflightBytes(); v > maxInflight.Load() {
					maxInflight.Store(v)
				}
			}
		}
	}()
	outageEnd := time.Now().Add(10 * time.Second)
	next := 100
	for time.Now().Before(outageEnd) {
		e.writeLines("app.log", next, next+200) // ~5 KB per round
		next += 200
		<-time.After(50 * time.Millisecond) // the writer's pace, not synchronisation
	}
	cpDuring, _ := e.checkpoint("app", f.Key)
	require.Equal(t, cpBefore.Offset, cpDuring.Offset, "no checkpoint may move while Kafka acknowledges nothing")
	written := fileSize(t, e.path("app.log"))
	require.Greater(t, written-cpBefore.Offset, int64(4*bound), "the outage must outgrow the memory bound to test it")
	fault.Remove()

	total := next + 1
	recs := e.waitRecords("app", total, 60*time.Second)
	close(stopSampling)
	<-sampled
	seen, _ := distinctValues(recs)
	require.Equal(t, total, len(seen), "no line lost across the outage")
	e.byFile(recs)
	require.LessOrEqual(t, maxInflight.Load(), int64(bound+1024), "in-flight bytes stayed under --max-inflight-bytes")
	t.Logf("outage: %d lines written during 10 s, max in-flight %d bytes (bound %d)", next-100, maxInflight.Load(), bound)
	testenv.WaitFor(t, 10*time.Second, "checkpoint at the end after the outage", func() bool {
		cp, ok := e.checkpoint("app", f.Key)
		return ok && cp.Offset == written
	})
}

func TestBadInputIsReportedAndOthersFlow(t *testing.T) {
	e := newEnv(t)
	// A file the kernel refuses to read, even to root (reading
	// /proc/<pid>/mem at address 0 fails with EIO): root ignores file modes,
	// so a chmod 000 file alone would prove nothing when tests run as root.
	require.NoError(t, os.Symlink("/proc/self/mem", e.path("unreadable.log")))
	e.write("noperm.log", header("noperm")+"secret\n")
	require.NoError(t, os.Chmod(e.path("noperm.log"), 0))
	e.write("empty.log", "")
	e.write("utf8.log", header("utf8")+"bad \xff\xfe bytes\nfine\n")
	big := strings.Repeat("x", 10<<20)
	e.write("big.log", header("big")+big+"\nafter big\n")
	e.write("ok.log", header("ok"))
	e.writeLines("ok.log", 0, 50)
	e.write("gone.log", header("gone"))
	e.writeLines("gone.log", 0, 20000)
	e.write("lost.log", header("lost"))
	e.writeLines("lost.log", 0, 100)
	e.putTopic("bad", topics.Config{Paths: []string{e.dir + "/*.log"}})
	e.putTopic("outside", topics.Config{Paths: []string{"/etc/*.conf"}})
	ag := e.startAgent("h1", func(c *Config, _ *ship.Config) { c.AllowPaths = []string{e.dir, "/proc"} })

	files := map[string]protocol.SeenFile{}
	for _, n := range []string{"utf8.log", "big.log", "ok.log", "gone.log"} {
		files[n] = e.waitSeen("bad", "h1", n)
		e.assign("bad", "h1", files[n])
	}
	// Deleted while read: the agent holds its own descriptor, so every line
	// still ships.
	testenv.WaitFor(t, 20*time.Second, "gone.log to be opened", func() bool {
		for _, r := range e.records("bad") {
			if r.Headers["file"] == files["gone.log"].Key {
				return true
			}
		}
		return false
	})
	require.NoError(t, os.Remove(e.path("gone.log")))
	// Deleted before it could be read: its bytes are counted as lost.
	lostFile := e.waitSeen("bad", "h1", "lost.log")
	lostSize := fileSize(t, e.path("lost.log"))
	require.NoError(t, os.Remove(e.path("lost.log")))
	e.assign("bad", "h1", lostFile)

	bigParts := (len(big) + topics.DefaultMaxLineBytes - 1) / topics.DefaultMaxLineBytes
	want := 3 + (2 + bigParts) + 51 + 20001
	var recs []testenv.Record
	testenv.WaitFor(t, 60*time.Second, fmt.Sprintf("%d records", want), func() bool {
		recs = e.records("bad")
		if len(recs) >= want {
			return true
		}
		byFile := map[string]int{}
		for _, r := range recs {
			byFile[r.Headers["path"]]++
		}
		t.Logf("records by file: %v", byFile)
		return false
	})
	requireEachOnce(t, recs, want, "every line of every readable file")
	testenv.WaitFor(t, 10*time.Second, "lost bytes counted", func() bool {
		return counterValue(t, ag.reg, "logagent_lost_bytes_total", "") == float64(lostSize)
	})

	var flaggedUTF8, parts int
	for _, r := range recs {
		switch r.Headers["file"] {
		case files["utf8.log"].Key:
			if r.Headers["invalid_utf8"] == "true" {
				flaggedUTF8++
				require.Equal(t, "bad \xff\xfe bytes", r.Value, "invalid bytes ship unchanged")
			}
		case files["big.log"].Key:
			if r.Headers["part"] != "" {
				parts++
				require.LessOrEqual(t, len(r.Value), topics.DefaultMaxLineBytes)
			}
		}
	}
	require.Equal(t, 1, flaggedUTF8)
	require.Equal(t, bigParts, parts, "the 10 MiB line is split into flagged parts")

	// Problems are in the agent's status, on its lease.
	testenv.WaitFor(t, 10*time.Second, "problems in /status/agents/h1", func() bool {
		st, ok := e.agentStatus("h1")
		if !ok {
			return false
		}
		var refused, unreadable, lost bool
		for _, p := range st.Problems {
			refused = refused || (p.Topic == "outside" && p.Kind == "topic-refused" && strings.Contains(p.Error, "/etc/*.conf"))
			unreadable = unreadable || (p.Path == e.path("unreadable.log") && p.Kind == "unreadable")
			lost = lost || (p.Path == e.path("lost.log") && p.Kind == "lost-bytes")
		}
		return refused && unreadable && lost && st.LostBytes == lostSize
	})
	if os.Geteuid() != 0 {
		st, _ := e.agentStatus("h1")
		require.Contains(t, fmt.Sprint(st.Problems), e.path("noperm.log"), "a file without read permission is reported")
	}
	_, served := e.heartbeat("outside", "h1")
	require.False(t, served, "a refused topic has no heartbeat")
	require.NoError(t, ag.a.Ready(), "bad input does not make the agent unready")
	require.NoError(t, ag.stop(), "and it stops cleanly")
}

func (e *env) agentStatus(agent string) (protocol.AgentStatus, bool) {
	var st protocol.AgentStatus
	ok := e.value(e.ks.AgentStatus(agent), &st)
	return st, ok
}

// TestLostBytesCountedOnce: a local file deleted before it was assigned is
// counted as lost by the scan that misses it; its assignment arriving
// afterwards does not count the same bytes again.
func TestLostBytesCountedOnce(t *testing.T) {
	e := newEnv(t)
	e.write("gone.log", header("gone"))
	e.writeLines("gone.log", 0, 100)
	size := fileSize(t, e.path("gone.log"))
	e.write("live.log", header("live"))
	e.putTopic("lc", topics.Config{Paths: []string{e.dir + "/*.log"}})
	ag := e.startAgent("h1")
	gone := e.waitSeen("lc", "h1", "gone.log")
	live := e.waitSeen("lc", "h1", "live.log")
	require.NoError(t, os.Remove(e.path("gone.log")))
	testenv.WaitFor(t, 10*time.Second, "the scan to count the deleted file", func() bool {
		return counterValue(t, ag.reg, "logagent_lost_bytes_total", "") == float64(size)
	})
	e.assign("lc", "h1", gone)
	// A live file shipping after the assignment shows the agent went on.
	e.assign("lc", "h1", live)
	e.writeLines("live.log", 0, 10)
	e.waitRecords("lc", 11, 20*time.Second)
	require.Equal(t, float64(size), counterValue(t, ag.reg, "logagent_lost_bytes_total", ""), "counted once")
}
