package agent

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

func maxStarting(n int) agentOpt {
	return func(c *Config, _ *ship.Config) { c.MaxStarting = n }
}

// TestStartsAreBoundedAndCaughtUpFilesPark: with more files than start
// slots, at most MaxStarting tailers catch up at once and, while files
// wait their turn, each file read to its end parks at once, whatever
// --close-inactive says (an hour here): the agent's start never holds a
// tailer per file. Every line is shipped once, the queue empties, and a
// parked file is still woken by a write.
func TestStartsAreBoundedAndCaughtUpFilesPark(t *testing.T) {
	const n, slots = 40, 3
	e := newEnv(t)
	e.quietFiles(n)
	// Every file is assigned before the agent starts (as on a restart),
	// so that its first reconcile wants all of them at once.
	first := e.startAgent("h1")
	seen := make([]protocol.SeenFile, n)
	for i := range n {
		seen[i] = e.waitSeen("quiet", "h1", fmt.Sprintf("f%03d.log", i))
	}
	require.NoError(t, first.stop())
	for _, f := range seen {
		e.assign("quiet", "h1", f)
		// Quiet for a minute: a file written in the last second keeps
		// its tailer (TestParkAtEnd).
		long := time.Now().Add(-time.Minute)
		require.NoError(t, os.Chtimes(f.Path, long, long))
	}
	ag := e.startAgent("h1", maxStarting(slots), closeInactive(time.Hour), scanEvery(time.Hour))
	requireEachOnce(t, e.waitRecords("quiet", 3*n, 30*time.Second), 3*n, "every line of the files")
	// The last ones to start found nobody waiting: they follow their file
	// for --close-inactive, as ever. All the others parked at their end.
	testenv.WaitFor(t, 20*time.Second, "all but the last few files parked, none queued", func() bool {
		return metricValue(t, ag.reg, "logagent_files_parked") >= n-slots &&
			metricValue(t, ag.reg, "logagent_files_queued") == 0 &&
			metricValue(t, ag.reg, "logagent_tailers") <= slots
	})
	require.Zero(t, ag.a.starts.inUse.Load(), "every slot was given back")
	require.LessOrEqual(t, ag.a.starts.peak.Load(), int64(slots), "never more tailers catching up than slots")
	require.Positive(t, ag.a.starts.peak.Load())

	e.writeLines("f000.log", 2, 3)
	requireEachOnce(t, e.waitRecords("quiet", 3*n+1, 20*time.Second), 3*n+1, "a line written to a parked file")
}

// TestStartQueueSkipsRunsThatStoppedWaiting: a queued run that was started
// or dropped meanwhile does not take a free slot, so the runs behind it get
// theirs (else the queue would stall with free slots and nothing to give
// one back).
func TestStartQueueSkipsRunsThatStoppedWaiting(t *testing.T) {
	s := newStarts(1)
	runs := make([]*fileRun, 4)
	for i := range runs {
		runs[i] = &fileRun{key: fmt.Sprint(i)}
	}
	require.True(t, s.take(runs[0]))
	for _, fr := range runs[1:] {
		require.False(t, s.take(fr))
		require.False(t, s.take(fr), "queued once")
	}
	require.Equal(t, 3, s.queuedLen())
	require.True(t, s.waiting.Load())
	require.Empty(t, s.next(func(*fileRun) bool { return true }), "no slot free")

	s.give(runs[0])
	s.give(runs[0]) // twice: one slot back
	require.Zero(t, s.inUse.Load())
	<-s.freed
	stale := map[*fileRun]bool{runs[1]: true, runs[2]: true}
	got := s.next(func(fr *fileRun) bool { return !stale[fr] })
	require.Equal(t, []*fileRun{runs[3]}, got, "the stale runs gave way")
	require.Zero(t, s.queuedLen())
	require.False(t, s.waiting.Load())
	// The slot is reserved for the run next returned: nobody else takes
	// it, and the run's own take finds it held.
	require.EqualValues(t, 1, s.inUse.Load())
	require.False(t, s.take(runs[0]))
	require.True(t, s.take(runs[3]))
	require.EqualValues(t, 1, s.inUse.Load(), "taken once")
	s.give(runs[3]) // not started after all (controller.releaseReserved)
	require.Zero(t, s.inUse.Load())
	require.Equal(t, []*fileRun{runs[0]}, s.next(func(*fileRun) bool { return true }), "the slot goes on to the next")
	require.LessOrEqual(t, s.peak.Load(), int64(1))
}

// TestParkAtEnd: a tailer at its file's end parks it at once only while
// files wait for a start slot, and only if the file was not written in
// the last second (one being written would cost a start per line), not
// for a multiline topic, and not with parking off.
func TestParkAtEnd(t *testing.T) {
	a := &Agent{cfg: Config{CloseInactive: time.Minute}, starts: newStarts(1)}
	fr := &fileRun{cfg: &topics.Config{}}
	quiet, written := time.Now().Add(-2*writtenLately), time.Now()
	require.False(t, a.parkAtEnd(fr, quiet), "nobody waits")
	require.True(t, a.starts.take(&fileRun{}))
	require.False(t, a.starts.take(&fileRun{}))
	require.True(t, a.starts.waiting.Load())
	require.True(t, a.parkAtEnd(fr, quiet))
	require.False(t, a.parkAtEnd(fr, written), "written in the last second")
	require.False(t, a.parkAtEnd(&fileRun{cfg: &topics.Config{Multiline: &topics.Multiline{}}}, quiet), "multiline")
	a.cfg.CloseInactive = -1
	require.False(t, a.parkAtEnd(fr, quiet), "parking off")
}

// TestReservedSlotOfARunNotStartedGoesOn: a slot the queue reserved for a
// run that the reconcile then does not start (its topic paused meanwhile,
// the agent fenced) is given back at once, and goes to the next run of the
// queue, rather than sitting free until a scan.
func TestReservedSlotOfARunNotStartedGoesOn(t *testing.T) {
	m, err := newMetrics(nil)
	require.NoError(t, err)
	a := &Agent{starts: newStarts(1), m: m}
	c := &controller{a: a, runs: map[fileRef]*fileRun{}, touched: map[fileRef]bool{}}
	r1, r2 := &fileRun{topic: "t", key: "1"}, &fileRun{topic: "t", key: "2"}
	c.runs[r1.ref()], c.runs[r2.ref()] = r1, r2
	busy := &fileRun{}
	require.True(t, a.starts.take(busy))
	require.False(t, a.starts.take(r1))
	require.False(t, a.starts.take(r2))
	a.starts.give(busy)
	<-a.starts.freed
	require.True(t, c.onSlotsFreed())
	require.True(t, c.touched[r1.ref()], "r1 has the slot")
	require.True(t, r1.slot.Load())

	c.releaseReserved() // the reconcile did not start r1
	require.False(t, r1.slot.Load())
	<-a.starts.freed
	require.True(t, c.onSlotsFreed())
	require.True(t, c.touched[r2.ref()], "the slot went on to r2")
	require.True(t, r2.slot.Load())
}
