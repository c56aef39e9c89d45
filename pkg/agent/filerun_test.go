package agent

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// TestAckedPrefix: the checkpoint candidate is the end of the longest
// acknowledged prefix, whether records are acked one by one or in ranges,
// in any order; a record acked twice counts once.
func TestAckedPrefix(t *testing.T) {
	fr := newFileRun("t", "f", "k", 1, "/x", protocol.FileIdentity{}, &topics.Config{})
	var recs []pendingRec
	for i := range int64(10) {
		recs = append(recs, pendingRec{start: i * 10, end: i*10 + 10})
	}
	require.True(t, fr.trackAll(0, recs[:4]))
	require.False(t, fr.trackAll(0, recs[4:]), "out of sequence")
	require.True(t, fr.trackAll(fr.nextSequence(), recs[4:]))
	start, end := fr.ack(3)
	require.Equal(t, [2]int64{30, 40}, [2]int64{start, end})
	require.Equal(t, int64(0), fr.ackedOffset(), "a gap before record 3")
	n, bytes := fr.ackRange(0, 1)
	require.Equal(t, 2, n)
	require.Equal(t, int64(20), bytes)
	require.Equal(t, int64(20), fr.ackedOffset())
	n, _ = fr.ackRange(5, 9)
	require.Equal(t, 5, n)
	require.Equal(t, int64(20), fr.ackedOffset(), "record 2 and 4 still missing")
	n, _ = fr.ackRange(2, 4)
	require.Equal(t, 2, n, "record 3 was acked already")
	require.Equal(t, int64(100), fr.ackedOffset())
	fr.mu.Lock()
	defer fr.mu.Unlock()
	require.Zero(t, fr.pending.len())
}

// TestUntrackFrom: records the shipper did not accept are dropped from the
// newest end; the next ones tracked take their sequences.
func TestUntrackFrom(t *testing.T) {
	fr := newFileRun("t", "f", "k", 1, "/x", protocol.FileIdentity{}, &topics.Config{})
	fr.trackAll(0, []pendingRec{{0, 10, false}, {10, 20, false}, {20, 30, false}})
	fr.ack(0)
	fr.untrackFrom(2)
	require.Equal(t, uint64(2), fr.nextSequence())
	n, _ := fr.ackRange(1, 1)
	require.Equal(t, 1, n)
	require.Equal(t, int64(20), fr.ackedOffset())
	fr.mu.Lock()
	require.Zero(t, fr.pending.len(), "the untracked record is not waited for")
	fr.mu.Unlock()
	fr.trackAll(2, []pendingRec{{20, 30, false}})
	fr.ack(2)
	require.Equal(t, int64(30), fr.ackedOffset())
}

// TestTrackingDoesNotAllocate: a busy file's bookkeeping reuses the same
// memory however acks and new records interleave. Here, as while the
// agent's benchmark ships a file, records are tracked 128 at a time and
// acked a batch of 3,072 at a time, with about 12,000 in flight: far more
// stay pending than an ack takes out (a slice resliced from the front
// reallocated whenever its end was reached).
func TestTrackingDoesNotAllocate(t *testing.T) {
	fr := newFileRun("t", "f", "k", 1, "/x", protocol.FileIdentity{}, &topics.Config{})
	recs := make([]pendingRec, 128)
	for i := range recs {
		recs[i] = pendingRec{start: int64(i), end: int64(i + 1)}
	}
	acked := uint64(0)
	cycle := func() {
		fr.trackAll(fr.nextSequence(), recs)
		if fr.nextSequence()-acked >= 12_288 {
			fr.ackRange(acked, acked+3071)
			acked += 3072
		}
	}
	for range 100 { // warm up: the queue grows to its working size
		cycle()
	}
	allocs, _ := testenv.Allocated(1000, cycle)
	require.Less(t, allocs, uint64(10), "allocations in 1,000 cycles")
	fr.mu.Lock()
	defer fr.mu.Unlock()
	require.Equal(t, int(fr.nextSeq-acked), fr.pending.len())
}

// TestPendingQueueKeepsOrder: records come out oldest first across the
// buffer's wrap and its growth while wrapped.
func TestPendingQueueKeepsOrder(t *testing.T) {
	var q pendingQueue
	next, oldest := int64(0), int64(0)
	push := func(n int) {
		recs := make([]pendingRec, n)
		for i := range recs {
			recs[i] = pendingRec{start: next, end: next + 1}
			next++
		}
		q.push(recs)
	}
	check := func() {
		t.Helper()
		require.Equal(t, int(next-oldest), q.len())
		for i := range q.len() {
			require.Equal(t, oldest+int64(i), q.at(i).start, "record %d", i)
		}
	}
	push(50)
	q.dropOldest(40)
	oldest = 40
	push(40) // wraps around the 64 records' buffer
	check()
	push(100) // grows while wrapped
	check()
	q.dropOldest(120)
	oldest += 120
	check()
	q.truncate(5)
	next = oldest + 5
	check()
	push(300)
	check()
}

// TestPendingQueueLetsGoWhenEmpty: a queue that grew during a burst lets
// go of its buffer once everything is acked; a small one keeps it.
func TestPendingQueueLetsGoWhenEmpty(t *testing.T) {
	var q pendingQueue
	q.push(make([]pendingRec, 5000))
	q.dropOldest(4000)
	require.NotNil(t, q.buf, "not empty yet")
	q.dropOldest(1000)
	require.Nil(t, q.buf)
	q.push(make([]pendingRec, 10))
	q.truncate(0)
	require.NotNil(t, q.buf, "a small buffer is kept")
	q.push(make([]pendingRec, 3))
	require.Equal(t, 3, q.len())
}

// TestShedWaitsForTheRecordsInFlight: a run parked with records in flight
// keeps its queue until they are acknowledged, then lets go of its
// storage; one parked with none lets go at once.
func TestShedWaitsForTheRecordsInFlight(t *testing.T) {
	fr := newFileRun("t", "k", "a", 1, "/p", protocol.FileIdentity{}, &topics.Config{})
	fr.trackAll(0, []pendingRec{{0, 10, false}, {10, 20, false}})
	fr.shed()
	require.Equal(t, 2, fr.pending.len(), "records in flight stay tracked")
	fr.ack(0)
	require.NotNil(t, fr.pending.buf, "one record still in flight")
	fr.ack(1)
	require.Equal(t, int64(20), fr.ackedOffset())
	require.Nil(t, fr.pending.buf, "the storage went with the last ack")

	fr.trackAll(2, []pendingRec{{20, 30, false}})
	fr.ack(2)
	require.NotNil(t, fr.pending.buf, "not shedding: a tailing file keeps its queue")
	fr.shed()
	require.Nil(t, fr.pending.buf)
}

// TestRunsShareTheirTopicsConfig: the runs of a topic share one config
// per config revision (a copy each was 144 bytes of every run); a new
// revision gets its own, and the runs still on the old one keep it as it
// was.
func TestRunsShareTheirTopicsConfig(t *testing.T) {
	c := &controller{configs: map[string]sharedConfig{}}
	w := want{cfg: topics.Config{KafkaTopic: "a"}, cfgRev: 5}
	first := c.config("t", w)
	require.Same(t, first, c.config("t", w))
	require.NotSame(t, first, c.config("u", w), "another topic")
	w.cfg.KafkaTopic, w.cfgRev = "b", 6
	next := c.config("t", w)
	require.NotSame(t, first, next)
	require.Equal(t, "b", next.KafkaTopic)
	require.Equal(t, "a", first.KafkaTopic)
}
