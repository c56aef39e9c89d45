package ship

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
)

// TestBatchSendsInOrder: records added to a Batch and sent reach Kafka
// once each, in order per key, each acked once; the caller's slices may
// be reused right after Add; Close drops what was never sent.
func TestBatchSendsInOrder(t *testing.T) {
	k := testenv.StartKafka(t)
	const topic = "batched"
	require.NoError(t, k.CreateTopic(topic, 3, nil))
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	b := s.NewBatch()
	var want []string
	for i := range 1000 {
		r := record(topic, fmt.Sprintf("k%d", i%4), i, a)
		b.Add(&r)
		for j := range r.Value {
			r.Value[j] = 'X' // Add copied it
		}
		want = append(want, fmt.Sprintf("k%d#%04d", i%4, i))
		if b.Len() == 64 || i == 999 {
			n, err := b.Send(context.Background())
			require.NoError(t, err)
			require.Positive(t, n)
			require.Zero(t, b.Len())
		}
	}
	b.Add(new(record(topic, "never", 0, a)))
	b.Close()
	flush(t, s.Shipper)
	a.requireAllOK(t, want)
	requireInKafkaInOrder(t, testenv.ReadAll(t, k.Brokers(), topic), want)
}

// TestBatchCopiesEveryBodyIntact: Send copies a batch's records into the
// arena in runs; a rejected record, a large one (an array of its own) and
// full chunks cut the runs. Each record must reach Kafka byte for byte.
func TestBatchCopiesEveryBodyIntact(t *testing.T) {
	k := testenv.StartKafka(t)
	const topic = "intact"
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	b := s.NewBatch()
	want := map[string]string{}
	var ok []string
	for i := range 3000 { // about 600 KB: several chunks
		id := fmt.Sprintf("k#%04d", i)
		value := id + " " + strings.Repeat(strconv.Itoa(i%10), 100+i%50)
		r := Record{Topic: topic, Key: []byte("k"), Value: []byte(value), Ack: AckFunc(a.fn(id))}
		switch i {
		case 500, 501:
			r.Topic = "not a topic!" // rejected at Add: no body
		case 1500:
			r.Value = []byte(id + " " + strings.Repeat("L", 100<<10)) // more than a quarter chunk
		}
		b.Add(&r)
		if r.Topic == topic {
			want[id] = string(r.Value)
			ok = append(ok, id)
		}
	}
	n, err := b.Send(context.Background())
	require.NoError(t, err)
	require.Equal(t, 3000, n)
	flush(t, s.Shipper)
	a.requireEach(t, append(ok, "k#0500", "k#0501"), func(id string) bool { return id == "k#0500" || id == "k#0501" })
	got := testenv.ReadAll(t, k.Brokers(), topic)
	require.Len(t, got, len(want))
	for _, r := range got {
		require.Equal(t, want[idOf(r)], r.Value, "record %s", idOf(r))
	}
}

// TestBatchSendGivesUpWithItsContext: during an outage the bound fills;
// Send returns how many records it handed over before its context ended,
// and the Acks of the others are never called.
func TestBatchSendGivesUpWithItsContext(t *testing.T) {
	_, s, fault := startOutage(t, "batch-outage", 1, 32<<10)
	a := newAcks()
	b := s.NewBatch()
	var ids []string
	for i := range 200 { // about 200 KiB of weight: several times the bound
		b.Add(new(record("batch-outage", "k", i, a)))
		ids = append(ids, fmt.Sprintf("k#%04d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	n, err := b.Send(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Positive(t, n)
	require.Less(t, n, 200)
	require.Zero(t, b.Len())
	fault.Remove()
	flush(t, s.Shipper)
	a.requireEach(t, ids[:n], func(string) bool { return false })
	require.Equal(t, int64(n), a.n.Load(), "records not handed over were acked")
	require.Zero(t, s.InflightBytes())
	b.Close()
}

// TestIdleBatchHoldsLittle: a sink per file, most of them idle, must not
// pin memory: after a Send of few records a batch keeps only a small
// scratch, and no arena chunk.
func TestIdleBatchHoldsLittle(t *testing.T) {
	k := testenv.StartKafka(t)
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	b := s.NewBatch()
	for i := range 100 { // busy: the scratch grows
		b.Add(new(record("idle", "k", i, a)))
	}
	_, err := b.Send(context.Background())
	require.NoError(t, err)
	require.Positive(t, cap(b.buf), "a busy batch keeps its scratch")
	require.LessOrEqual(t, cap(b.buf), batchBufMax)
	b.Add(new(record("idle", "k", 100, a))) // then one line now and then
	_, err = b.Send(context.Background())
	require.NoError(t, err)
	require.Zero(t, cap(b.buf), "an idle batch keeps no scratch")
	flush(t, s.Shipper)
	require.Equal(t, int64(101), a.n.Load())
}

// TestBatchesReuseArrays: taking batches off the pending queue and
// completing them reuses the same arrays, however many records wait behind
// the batch taken (lending the batch the queue's front made the queue
// reallocate every batch or two).
func TestBatchesReuseArrays(t *testing.T) {
	s, _ := newShipper(t, testConfig([]string{"127.0.0.1:1"}))
	es := make([]*entry, 12_000)
	for i := range es {
		es[i] = &entry{size: 300}
	}
	next := 0
	cycle := func() {
		s.mu.Lock()
		for len(s.pending) < len(es)-1000 { // about 12,000 waiting, as in flight
			e := es[next%len(es)]
			*e = entry{size: 300}
			s.enqueueLocked(e)
			next++
		}
		b := s.takeLocked()
		s.mu.Unlock()
		require.NotEmpty(t, b)
		s.complete(b)
		s.mu.Lock()
		s.free = s.free[:0] // the entries are reused by hand here
		s.mu.Unlock()
	}
	for range 10 {
		cycle()
	}
	// complete replaces a channel per batch; the arrays are reused.
	_, bytes := testenv.Allocated(100, cycle)
	require.Less(t, bytes, uint64(100<<10), "bytes allocated by 100 batches")
}
