package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// autoAssign plays the coordinator for a local topic: every file an agent
// reports is assigned to it, and assignments of files it stopped reporting
// are revoked (the agent then releases them). It runs until the test ends.
func (e *env) autoAssign(topic, agent string) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	e.t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		assigned := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			resp, err := e.cli.Get(ctx, e.ks.Heartbeat(topic, agent))
			if err != nil || len(resp.Kvs) == 0 {
				continue
			}
			var hb protocol.Heartbeat
			if protocol.Unmarshal("hb", resp.Kvs[0].Value, &hb) != nil {
				continue
			}
			for _, f := range hb.Files {
				if assigned[f.Key] {
					continue
				}
				v, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: f.Path, Leader: "test"})
				if _, err := e.cli.Put(ctx, e.ks.Assign(agent, topic, f.Key), string(v)); err == nil {
					assigned[f.Key] = true
				}
			}
		}
	}()
}

// checkExactlyOnce reads the topic and requires every numbered line
// "<tag> line NNNNNN" for tags x counts exactly once.
func (e *env) checkExactlyOnce(topic string, want map[string]int, within time.Duration) {
	e.t.Helper()
	total := 0
	for _, n := range want {
		total += n
	}
	var recs []testenv.Record
	// On a timeout the counts below say what is missing.
	testenv.Await(within, func() bool {
		recs = e.records(topic)
		lines := 0
		for _, r := range recs {
			if !strings.HasPrefix(r.Value, "#") {
				lines++
			}
		}
		return lines >= total
	})
	got := map[string]int{}
	for _, r := range recs {
		if strings.HasPrefix(r.Value, "#") {
			continue // a file's header
		}
		got[r.Value]++
	}
	var lost, dup int
	lostIn, dupIn := map[string]int{}, map[string]int{}
	for tag, n := range want {
		for i := range n {
			switch c := got[fmt.Sprintf("%s line %06d", tag, i)]; {
			case c == 0:
				lost++
				lostIn[tag]++
			case c > 1:
				dup += c - 1
				dupIn[tag] += c - 1
			}
		}
	}
	require.Zero(e.t, lost, "lines lost, by file: %v (duplicated: %v)", lostIn, dupIn)
	require.Zero(e.t, dup, "lines duplicated, by file: %v", dupIn)
}

// TestRenameRotation200Times: 200 rename rotations of app.log, each after a
// burst of 50 lines and a 20 ms pause, with the topic's glob matching the
// rotated names too (app.log*): every line exactly once. Rotated files are
// kept (app.log.1 ... app.log.200), as logrotate's dateext does.
func TestRenameRotation200Times(t *testing.T) {
	if testing.Short() {
		t.Skip("200 rotations")
	}
	e := newEnv(t)
	e.putTopic("rot", topics.Config{Paths: []string{e.dir + "/app.log*"}})
	e.startAgent("h1")
	e.autoAssign("rot", "h1")
	want := map[string]int{}
	for gen := 1; gen <= 200; gen++ {
		tag := "g" + strconv.Itoa(gen)
		e.write("app.log", header(tag))
		var b strings.Builder
		for i := range 50 {
			fmt.Fprintf(&b, "%s line %06d\n", tag, i)
		}
		e.write("app.log", b.String())
		want[tag] = 50
		<-time.After(20 * time.Millisecond) // the writer's pace
		require.NoError(t, os.Rename(e.path("app.log"), e.path(fmt.Sprintf("app.log.%d", gen))))
	}
	e.checkExactlyOnce("rot", want, 60*time.Second)
}

// TestRenameRotationOverwritingApplog1 is the rename rotation as
// logrotate's "rotate 1" does it: app.log -> app.log.1, which unlinks the
// previous app.log.1, 200 times, after bursts of 50 lines and 20 ms pauses.
// A generation lives about 20 ms under the name app.log and as long again
// under app.log.1 before it is deleted: far less than a scan interval or an
// assignment round trip. The directory watcher opens each one as it
// appears and the held descriptor is read when the assignment comes, so
// every line arrives exactly once, with the glob matching only app.log and
// again matching app.log*.
func TestRenameRotationOverwritingApplog1(t *testing.T) {
	if testing.Short() {
		t.Skip("200 rotations, twice")
	}
	for _, glob := range []string{"app.log", "app.log*"} {
		t.Run(glob, func(t *testing.T) {
			e := newEnv(t)
			e.putTopic("rot", topics.Config{Paths: []string{e.dir + "/" + glob}})
			ra := e.startAgent("h1")
			e.autoAssign("rot", "h1")
			// The agent watches the directory before the first file appears.
			testenv.WaitFor(t, 10*time.Second, "the directory watched", func() bool {
				return gaugeValue(t, ra.reg, "logagent_watched_dirs") == 1
			})
			want := map[string]int{}
			for gen := 1; gen <= 200; gen++ {
				tag := "g" + strconv.Itoa(gen)
				var b strings.Builder
				b.WriteString(header(tag))
				for i := range 50 {
					fmt.Fprintf(&b, "%s line %06d\n", tag, i)
				}
				e.write("app.log", b.String())
				want[tag] = 50
				<-time.After(20 * time.Millisecond) // the writer's pace
				require.NoError(t, os.Rename(e.path("app.log"), e.path("app.log.1")))
			}
			e.checkExactlyOnce("rot", want, 60*time.Second)
		})
	}
}

// TestWriterOutrunsReaderAcrossTwoRotations: the writer fills a file,
// rotates it, fills the next and rotates again before the agent could have
// read the first to its end: nothing is lost.
func TestWriterOutrunsReaderAcrossTwoRotations(t *testing.T) {
	e := newEnv(t)
	e.putTopic("fast", topics.Config{Paths: []string{e.dir + "/app.log*"}})
	e.startAgent("h1")
	e.autoAssign("fast", "h1")
	want := map[string]int{}
	bulk := func(tag string, n int) {
		var b strings.Builder
		b.WriteString(header(tag))
		for i := range n {
			fmt.Fprintf(&b, "%s line %06d\n", tag, i)
		}
		e.write("app.log", b.String())
		want[tag] = n
	}
	bulk("one", 30000)
	require.NoError(t, os.Rename(e.path("app.log"), e.path("app.log.1")))
	bulk("two", 30000)
	require.NoError(t, os.Rename(e.path("app.log.1"), e.path("app.log.2")))
	require.NoError(t, os.Rename(e.path("app.log"), e.path("app.log.1")))
	bulk("three", 30000)
	e.checkExactlyOnce("fast", want, 60*time.Second)
}

// TestCopytruncate: logrotate's copytruncate copies app.log to app.log.1 and
// truncates app.log, and the application at once writes past the old size.
// The glob matches the copy. Nothing is lost and nothing is shipped twice:
// the copy continues the original's offset (its lines before it were
// shipped under the original's key), and the truncated original is read
// again from 0 as new content.
func TestCopytruncate(t *testing.T) {
	e := newEnv(t)
	e.putTopic("ct", topics.Config{Paths: []string{e.dir + "/app.log*"}})
	ag := e.startAgent("h1")
	e.autoAssign("ct", "h1")
	old := header("old")
	for i := range 2000 {
		old += fmt.Sprintf("old line %06d\n", i)
	}
	e.write("app.log", old)
	testenv.WaitFor(t, 20*time.Second, "some old lines shipped", func() bool { return len(e.records("ct")) > 100 })
	// copytruncate, then the application writes on at once.
	require.NoError(t, os.WriteFile(e.path("app.log.1"), []byte(old), 0o644))
	require.NoError(t, os.Truncate(e.path("app.log"), 0))
	var b strings.Builder
	b.WriteString(header("new"))
	for i := range 4000 {
		fmt.Fprintf(&b, "new line %06d\n", i)
	}
	e.write("app.log", b.String())

	want := 1 + 2000 + 1 + 4000 // with both headers
	var recs []testenv.Record
	testenv.WaitFor(t, 60*time.Second, "every old and new line", func() bool {
		recs = e.records("ct")
		distinct := map[string]bool{}
		for _, r := range recs {
			distinct[r.Value] = true
		}
		return len(distinct) >= want
	})
	count := map[string]int{}
	for _, r := range recs {
		count[r.Value]++
	}
	require.Len(t, count, want)
	for v, n := range count {
		require.Equal(t, 1, n, "%q shipped %d times", v, n)
	}
	require.Equal(t, 1.0, counterValue(t, ag.reg, "logagent_copies_continued_total", ""))
}
