package ship

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is DefaultConfig made quick: short linger and retry backoff.
func testConfig(brokers []string) Config {
	cfg := DefaultConfig()
	cfg.Brokers = brokers
	cfg.Linger = time.Millisecond
	cfg.RetryBackoffMin = time.Millisecond
	cfg.RetryBackoffMax = 20 * time.Millisecond
	cfg.WriteTimeout = 5 * time.Second
	return cfg
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is a Shipper whose Run goroutine the test owns.
type running struct {
	*Shipper
	reg  *prometheus.Registry
	stop func() // cancels Run and waits for it to return nil
}

// newShipper builds a shipper with a fresh registry; it does not run it.
func newShipper(t testing.TB, cfg Config) (*Shipper, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := New(cfg, reg, testLogger(t))
	require.NoError(t, err)
	return s, reg
}

// run starts s.Run and registers its stop as a cleanup, which runs before
// the broker's (cleanups run last in, first out).
func run(t testing.TB, s *Shipper, reg *prometheus.Registry) running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done, "Run's result")
		})
	}
	t.Cleanup(stop)
	return running{Shipper: s, reg: reg, stop: stop}
}

func startShipper(t testing.TB, cfg Config) running {
	t.Helper()
	s, reg := newShipper(t, cfg)
	return run(t, s, reg)
}

// acks records every Ack call by record id.
type acks struct {
	mu     sync.Mutex
	counts map[string]int
	errs   map[string]error
	order  []string
	n      atomic.Int64
}

func newAcks() *acks { return &acks{counts: map[string]int{}, errs: map[string]error{}} }

func (a *acks) fn(id string) func(error) {
	return func(err error) {
		a.mu.Lock()
		a.counts[id]++
		a.errs[id] = err
		a.order = append(a.order, id)
		a.mu.Unlock()
		a.n.Add(1)
	}
}

// requireEach checks that every id was acked exactly once, with an error
// exactly when wantErr says so.
func (a *acks) requireEach(t testing.TB, ids []string, wantErr func(id string) bool) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, id := range ids {
		require.Equalf(t, 1, a.counts[id], "Ack calls for record %s", id)
		if wantErr(id) {
			require.Errorf(t, a.errs[id], "Ack error of record %s", id)
		} else {
			require.NoErrorf(t, a.errs[id], "Ack error of record %s", id)
		}
	}
	require.Len(t, a.counts, len(ids), "acked records")
}

// requireAllOK checks that every record of ids was acked once, without
// error, and each key's acks in Send order.
func (a *acks) requireAllOK(t testing.TB, ids []string) {
	t.Helper()
	a.requireEach(t, ids, func(string) bool { return false })
	a.requireOrderPerKey(t)
}

// requireOrderPerKey checks that the acks of each key came in Send order;
// ids are "key#seq".
func (a *acks) requireOrderPerKey(t testing.TB) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	last := map[string]int{}
	for _, id := range a.order {
		key, seq := splitID(t, id)
		if prev, ok := last[key]; ok {
			require.Greaterf(t, seq, prev, "acks of key %s out of Send order", key)
		}
		last[key] = seq
	}
}

func splitID(t testing.TB, id string) (string, int) {
	t.Helper()
	key, n, ok := strings.Cut(id, "#")
	require.Truef(t, ok, "record id %q", id)
	seq, err := strconv.Atoi(n)
	require.NoError(t, err)
	return key, seq
}

func record(topic, key string, seq int, a *acks) Record {
	id := fmt.Sprintf("%s#%04d", key, seq)
	return Record{
		Topic: topic,
		Key:   []byte(key),
		Value: []byte(id + " " + strings.Repeat("x", 100)),
		Headers: []kafka.Header{
			{Key: "host", Value: []byte("host-1")},
			{Key: "path", Value: []byte("/var/log/" + key)},
			{Key: "offset", Value: []byte(strconv.Itoa(seq * 130))},
		},
		Ack: AckFunc(a.fn(id)),
	}
}

func idOf(r testenv.Record) string { return strings.Fields(r.Value)[0] }

// requireInKafkaInOrder checks that recs hold every id of want, and that
// for each key the first occurrences are in Send order, all in one
// partition. Duplicates are allowed (at least once), loss is not.
func requireInKafkaInOrder(t testing.TB, recs []testenv.Record, want []string) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	part := map[string]int32{}
	for _, r := range recs {
		id := idOf(r)
		key, seq := splitID(t, id)
		require.Equal(t, key, r.Key, "key of %s", id)
		if p, ok := part[key]; ok {
			require.Equalf(t, p, r.Partition, "key %s spread over partitions", key)
		}
		part[key] = r.Partition
		if seen[id] {
			continue
		}
		seen[id] = true
		if prev, ok := last[key]; ok {
			require.Greaterf(t, seq, prev, "key %s: %s after seq %d in partition %d", key, id, prev, r.Partition)
		}
		last[key] = seq
	}
	for _, id := range want {
		require.Truef(t, seen[id], "record %s missing from Kafka", id)
	}
}

func flush(t testing.TB, s *Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, s.Flush(ctx))
}

func send(t testing.TB, s *Shipper, r Record) {
	t.Helper()
	require.NoError(t, s.Send(context.Background(), r))
}

// TestShipKeysInOrderWithHeaders: records of several keys arrive with key,
// value and headers, each key in Send order in one partition; every Ack is
// called once, and only once the record can be read back.
func TestShipKeysInOrderWithHeaders(t *testing.T) {
	k := testenv.StartKafka(t)
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	const topic = "logs"

	// Ack means readable: read the record back as soon as it is acked.
	acked := make(chan struct{})
	probe := record(topic, "probe", 0, a)
	inner := probe.Ack
	probe.Ack = AckFunc(func(err error) { inner.Ack(0, err); close(acked) })
	send(t, s.Shipper, probe)
	select {
	case <-acked:
	case <-time.After(30 * time.Second):
		t.Fatal("probe record never acked")
	}
	got := testenv.ReadAll(t, k.Brokers(), topic)
	require.Len(t, got, 1, "records readable once the first is acked")
	require.Equal(t, "probe#0000", idOf(got[0]))

	keys := []string{"file-a", "file-b", "file-c", "file-d", "file-e"}
	want := []string{"probe#0000"}
	var wg sync.WaitGroup
	for _, key := range keys {
		// One sender per key, as one tailer per file.
		wg.Go(func() {
			for i := range 300 {
				send(t, s.Shipper, record(topic, key, i, a))
			}
		})
		for i := range 300 {
			want = append(want, fmt.Sprintf("%s#%04d", key, i))
		}
	}
	wg.Wait()
	flush(t, s.Shipper)

	a.requireAllOK(t, want)
	require.Zero(t, s.InflightBytes())

	recs := testenv.ReadAll(t, k.Brokers(), topic)
	require.Len(t, recs, len(want), "no fault, so no duplicate")
	requireInKafkaInOrder(t, recs, want)
	for _, r := range recs {
		key, seq := splitID(t, idOf(r))
		require.Equal(t, map[string]string{
			"host": "host-1", "path": "/var/log/" + key, "offset": strconv.Itoa(seq * 130),
		}, r.Headers, "headers of %s", idOf(r))
	}

	require.Equal(t, float64(len(want)), testutil.ToFloat64(s.m.records.WithLabelValues(topic)))
	require.Positive(t, testutil.ToFloat64(s.m.bytes.WithLabelValues(topic)))
	require.Zero(t, testutil.CollectAndCount(s.m.writeErrors), "write errors")
}

// TestEmptyKeySpreads: records without a key are not all sent to one
// partition (murmur2 would hash an empty key to a fixed one).
func TestEmptyKeySpreads(t *testing.T) {
	k := testenv.StartKafka(t)
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	for i := range 300 {
		r := record("nokey", "x", i, a)
		r.Key = []byte{}
		send(t, s.Shipper, r)
	}
	flush(t, s.Shipper)
	parts := map[int32]int{}
	for _, r := range testenv.ReadAll(t, k.Brokers(), "nokey") {
		require.Empty(t, r.Key)
		parts[r.Partition]++
	}
	require.Greater(t, len(parts), 1, "partitions used by 300 keyless records: %v", parts)
}

// TestDefaultWriterConfig: the writer New builds waits for every in-sync
// replica (kafka-go's own default is fire and forget), hashes keys as Java
// clients do, and never splits or retries behind the shipper's back.
func TestDefaultWriterConfig(t *testing.T) {
	s, err := New(DefaultConfig(), nil, nil)
	require.NoError(t, err)
	assert.Equal(t, kafka.RequireAll, s.w.RequiredAcks)
	assert.IsType(t, kafka.Murmur2Balancer{}, s.w.Balancer)
	assert.Equal(t, kafka.Lz4, s.w.Compression)
	assert.Equal(t, 1, s.w.MaxAttempts)
	assert.Equal(t, 10_000, s.w.BatchSize)
	assert.Equal(t, int64(1_000_000), s.w.BatchBytes)
	assert.Less(t, s.w.BatchTimeout, time.Millisecond, "kafka-go must not linger on top of the shipper")
	assert.False(t, s.w.Async)
	assert.Same(t, s.tr, s.w.Transport)

	// A Config built by hand with no Acks is acks=all too.
	cfg := DefaultConfig()
	cfg.Acks = Acks(0)
	_, w := newWriter(cfg)
	assert.Equal(t, kafka.RequireAll, w.RequiredAcks)
	cfg.Acks = AcksLeader
	_, w = newWriter(cfg)
	assert.Equal(t, kafka.RequireOne, w.RequiredAcks)
}

// startOutage starts a broker whose topic (of partitions partitions)
// refuses every write until the returned fault is removed, and a shipper
// whose in-flight bound is bound.
func startOutage(t *testing.T, topic string, partitions int32, bound int64) (*testenv.Kafka, running, *kfake.FaultHandle) {
	t.Helper()
	k := testenv.StartKafka(t)
	require.NoError(t, k.CreateTopic(topic, partitions, nil))
	fault := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	cfg := testConfig(k.Brokers())
	cfg.MaxInflightBytes = bound
	return k, startShipper(t, cfg), fault
}

// TestOutageBlocksSendersThenResumes: while every produce request fails with
// NOT_ENOUGH_REPLICAS, nothing is acked, in-flight bytes stop at the bound
// and senders block; once the fault is lifted everything arrives, in order
// per key, and every Ack fires once.
func TestOutageBlocksSendersThenResumes(t *testing.T) {
	const topic, bound = "outage", 64 << 10
	k, s, fault := startOutage(t, topic, 3, bound)
	a := newAcks()

	keys := []string{"a", "b", "c", "d"}
	const perKey = 300 // 1200 records of ~200 B: several times the bound
	var maxSeen atomic.Int64
	sample := func() int64 {
		n := s.InflightBytes()
		for {
			m := maxSeen.Load()
			if n <= m || maxSeen.CompareAndSwap(m, n) {
				return n
			}
		}
	}
	var attempted, returned atomic.Int64
	var want []string
	var recs []Record
	for i := range perKey {
		for _, key := range keys {
			recs = append(recs, record(topic, key, i, a))
			want = append(want, fmt.Sprintf("%s#%04d", key, i))
		}
	}
	recSize := recordSize(recs[0].Key, recs[0].Value, nil, recs[0].Headers) + recordOverhead // its weight
	senderDone := make(chan error, 1)
	go func() {
		for _, r := range recs {
			attempted.Add(1)
			if err := s.Send(context.Background(), r); err != nil {
				senderDone <- err
				return
			}
			returned.Add(1)
			sample()
		}
		senderDone <- nil
	}()

	testenv.WaitFor(t, 20*time.Second, "the sender to block on the in-flight bound during the outage", func() bool {
		return sample()+recSize > bound && attempted.Load() > returned.Load() && fault.Hits() > 0
	})
	require.Zero(t, a.n.Load(), "records acked while Kafka refuses every write")
	require.Less(t, returned.Load(), int64(len(recs)))

	// A sender whose context ends while blocked gives up, not accepted.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	extra := record(topic, "z", 0, a)
	require.ErrorIs(t, s.Send(ctx, extra), context.Canceled)

	fault.Remove()
	require.NoError(t, <-senderDone)
	flush(t, s.Shipper)
	require.LessOrEqual(t, maxSeen.Load(), int64(bound), "in-flight bytes above --max-inflight-bytes")

	a.requireAllOK(t, want)
	require.Zero(t, s.InflightBytes())
	requireInKafkaInOrder(t, testenv.ReadAll(t, k.Brokers(), topic), want)
	require.Positive(t, testutil.ToFloat64(s.m.writeErrors.WithLabelValues("not_enough_replicas")))
	require.Positive(t, testutil.ToFloat64(s.m.retries.WithLabelValues("not_enough_replicas")))
	require.Zero(t, testutil.CollectAndCount(s.m.rejected), "rejected records")
}

// TestPartitionFailureRetriesOnlyItsRecords: when one partition refuses
// writes for a while, only its records are written again (no duplicate of
// the others), and they keep their order.
func TestPartitionFailureRetriesOnlyItsRecords(t *testing.T) {
	k := testenv.StartKafka(t)
	const topic = "partial"
	require.NoError(t, k.CreateTopic(topic, 3, nil))
	fault := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{0},
		Err: kerr.LeaderNotAvailable, Count: 5})
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	var want []string
	for i := range 200 {
		key := "key-" + strconv.Itoa(i%10)
		send(t, s.Shipper, record(topic, key, i, a))
		want = append(want, fmt.Sprintf("%s#%04d", key, i))
	}
	flush(t, s.Shipper)
	require.Equal(t, 5, fault.Hits(), "faulted produce requests")
	a.requireAllOK(t, want)
	recs := testenv.ReadAll(t, k.Brokers(), topic)
	require.Len(t, recs, len(want), "a record written twice")
	requireInKafkaInOrder(t, recs, want)
	parts := map[int32]bool{}
	for _, r := range recs {
		parts[r.Partition] = true
	}
	require.True(t, parts[0], "no key landed on the faulted partition; pick other keys")
	require.Positive(t, testutil.ToFloat64(s.m.retries.WithLabelValues("leader_not_available")))
}

// TestBrokerRestart: the broker goes away altogether (connections refused)
// and comes back on the same port with its data; records sent meanwhile
// wait and then arrive.
func TestBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	k1 := testenv.StartKafka(t, kfake.DataDir(dir), kfake.SyncWrites())
	_, port, err := net.SplitHostPort(k1.Brokers()[0])
	require.NoError(t, err)
	const topic = "restart"
	require.NoError(t, k1.CreateTopic(topic, 3, nil))

	s := startShipper(t, testConfig(k1.Brokers()))
	a := newAcks()
	var want []string
	for i := range 50 {
		send(t, s.Shipper, record(topic, "k"+strconv.Itoa(i%3), i, a))
		want = append(want, fmt.Sprintf("k%d#%04d", i%3, i))
	}
	flush(t, s.Shipper)

	k1.Close()
	for i := 50; i < 100; i++ {
		send(t, s.Shipper, record(topic, "k"+strconv.Itoa(i%3), i, a))
		want = append(want, fmt.Sprintf("k%d#%04d", i%3, i))
	}
	testenv.WaitFor(t, 20*time.Second, "writes to fail while the broker is down", func() bool {
		return sum(t, s.m.retries) > 0
	})
	require.Equal(t, int64(50), a.n.Load(), "records acked while the broker is down")

	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	k2 := testenv.StartKafka(t, kfake.Ports(p), kfake.DataDir(dir), kfake.SyncWrites())
	flush(t, s.Shipper)
	a.requireAllOK(t, want)
	requireInKafkaInOrder(t, testenv.ReadAll(t, k2.Brokers(), topic), want)
}

// TestRejectedRecordsDoNotStopOthers: records no retry can write (too
// large, illegal topic name, topic refused by ACL) are acked with an
// ErrRejected error and counted; the records after them are shipped.
func TestRejectedRecordsDoNotStopOthers(t *testing.T) {
	k := testenv.StartKafka(t)
	k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "forbidden", Err: kerr.TopicAuthorizationFailed, Count: -1})
	s := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()

	huge := record("good", "k", 1, a)
	huge.Value = append(huge.Value, make([]byte, 2<<20)...) // 2 MiB > --kafka-batch-bytes
	recs := []Record{
		record("good", "k", 0, a),
		huge,
		record("bad topic!", "k", 2, a),
		record("forbidden", "k", 3, a),
		record("good", "k", 4, a),
		record("good", "other", 5, a),
	}
	for _, r := range recs {
		send(t, s.Shipper, r)
	}
	flush(t, s.Shipper)

	reasons := map[string]string{"k#0001": "message_size_too_large", "k#0002": "invalid_topic", "k#0003": "topic_authorization_failed"}
	a.requireEach(t, []string{"k#0000", "k#0001", "k#0002", "k#0003", "k#0004", "other#0005"},
		func(id string) bool { return reasons[id] != "" })
	for id, reason := range reasons {
		err := a.errs[id]
		require.ErrorIs(t, err, ErrRejected, id)
		var re *RejectedError
		require.ErrorAs(t, err, &re, id)
		require.Equal(t, reason, re.Reason, id)
		require.Equal(t, 1.0, testutil.ToFloat64(s.m.rejected.WithLabelValues(reason)), reason)
	}
	require.ErrorIs(t, a.errs["k#0003"], kafka.TopicAuthorizationFailed)
	a.requireOrderPerKey(t)

	got := testenv.ReadAll(t, k.Brokers(), "good")
	var ids []string
	for _, r := range got {
		ids = append(ids, idOf(r))
	}
	require.ElementsMatch(t, []string{"k#0000", "k#0004", "other#0005"}, ids)
	requireInKafkaInOrder(t, got, ids)
	require.Empty(t, testenv.ReadAll(t, k.Brokers(), "forbidden"))
}

// TestTopicSmallerThanBatch: a topic whose max.message.bytes is below
// --kafka-batch-bytes refuses whole batches; the shipper cuts them smaller
// until only the record too large on its own is rejected.
func TestTopicSmallerThanBatch(t *testing.T) {
	k := testenv.StartKafka(t)
	const topic = "small"
	require.NoError(t, k.CreateTopic(topic, 1, map[string]string{"max.message.bytes": "4000"}))
	cfg := testConfig(k.Brokers())
	cfg.Compression = 0 // so the sizes are what the broker sees
	cfg.Linger = time.Minute
	s := startShipper(t, cfg)
	a := newAcks()

	var want []string
	for i := range 40 {
		r := record(topic, "k", i, a)
		r.Value = append(r.Value, rand.Text()+rand.Text()+rand.Text()...)
		if i == 20 {
			r.Value = append(r.Value, make([]byte, 5000)...)
		} else {
			want = append(want, fmt.Sprintf("k#%04d", i))
		}
		send(t, s.Shipper, r)
	}
	flush(t, s.Shipper) // one batch of 40, as the linger is a minute

	a.requireEach(t, append(want, "k#0020"), func(id string) bool { return id == "k#0020" })
	require.ErrorIs(t, a.errs["k#0020"], kafka.MessageSizeTooLarge)
	a.requireOrderPerKey(t)
	got := testenv.ReadAll(t, k.Brokers(), topic)
	require.Len(t, got, len(want))
	requireInKafkaInOrder(t, got, want)
	require.Equal(t, 1.0, testutil.ToFloat64(s.m.rejected.WithLabelValues("message_size_too_large")))
	require.Greater(t, testutil.ToFloat64(s.m.retries.WithLabelValues("message_size_too_large")), 1.0)
}

// TestBatchBytesBoundary: a record exactly --kafka-batch-bytes in kafka-go's
// own count is written (so our count is not below kafka-go's), one byte
// more is rejected without a write.
func TestBatchBytesBoundary(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := testConfig(k.Brokers())
	cfg.BatchBytes = 2000
	s := startShipper(t, cfg)
	a := newAcks()
	fits := record("edge", "k", 0, a)
	fits.Value = append(fits.Value, make([]byte, 2000-recordSize(fits.Key, fits.Value, nil, fits.Headers))...)
	require.Equal(t, int64(2000), recordSize(fits.Key, fits.Value, nil, fits.Headers))
	over := record("edge", "k", 1, a)
	over.Value = append(over.Value, make([]byte, 2001-recordSize(over.Key, over.Value, nil, over.Headers))...)
	send(t, s.Shipper, fits)
	send(t, s.Shipper, over)
	flush(t, s.Shipper)
	a.requireEach(t, []string{"k#0000", "k#0001"}, func(id string) bool { return id == "k#0001" })
	require.Zero(t, testutil.CollectAndCount(s.m.writeErrors), "the oversized record must not reach kafka-go")
}

// TestRecordLargerThanBound: a record above --max-inflight-bytes is sent
// alone instead of waiting for ever.
func TestRecordLargerThanBound(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := testConfig(k.Brokers())
	cfg.MaxInflightBytes = 1024
	s := startShipper(t, cfg)
	a := newAcks()
	var want []string
	for i := range 5 {
		r := record("big", "k", i, a)
		r.Value = append(r.Value, make([]byte, 5000)...)
		send(t, s.Shipper, r)
		require.LessOrEqual(t, s.InflightBytes(), int64(1024))
		want = append(want, fmt.Sprintf("k#%04d", i))
	}
	flush(t, s.Shipper)
	a.requireEach(t, want, func(string) bool { return false })
	require.Len(t, testenv.ReadAll(t, k.Brokers(), "big"), 5)
}

// TestBoundBelowBatchDoesNotWaitForLinger: with a bound smaller than a
// batch, a sender that runs out of room gets the lingering batch written
// rather than waiting out the linger.
func TestBoundBelowBatchDoesNotWaitForLinger(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := testConfig(k.Brokers())
	cfg.MaxInflightBytes = 4096
	cfg.Linger = time.Minute
	s := startShipper(t, cfg)
	a := newAcks()
	var want []string
	for i := range 200 { // ~50 KiB through a 4 KiB bound
		send(t, s.Shipper, record("tight", "k", i, a))
		want = append(want, fmt.Sprintf("k#%04d", i))
	}
	testenv.WaitFor(t, 20*time.Second, "acks without a Flush", func() bool { return a.n.Load() >= 150 })
	flush(t, s.Shipper)
	a.requireEach(t, want, func(string) bool { return false })
}

// TestFlush: Flush returns once everything sent before it is acked, even
// records still lingering; with an ended context it returns the context's
// error; after Run it fails with ErrStopped, as does Send.
func TestFlush(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := testConfig(k.Brokers())
	cfg.Linger = time.Minute // only Flush can get these records out in time
	s, reg := newShipper(t, cfg)
	require.NoError(t, s.Flush(context.Background()), "nothing sent")

	a := newAcks()
	for i := range 10 {
		send(t, s, record("flush", "k", i, a)) // accepted before Run starts
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, s.Flush(ctx), context.Canceled)
	expired, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	<-expired.Done()
	require.ErrorIs(t, s.Flush(expired), context.DeadlineExceeded)

	r := run(t, s, reg)
	flush(t, s)
	require.Equal(t, int64(10), a.n.Load(), "acks when Flush returned")
	require.ErrorIs(t, s.Run(context.Background()), ErrRunning)

	// A record Kafka refuses to take is still unacked when Run stops: Flush
	// reports it, and Ack is never called.
	fault := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	defer fault.Remove()
	send(t, s, record("flush", "k", 10, a))
	flushed := make(chan error, 1)
	go func() { flushed <- s.Flush(context.Background()) }()
	testenv.WaitFor(t, 10*time.Second, "the write to fail", func() bool { return fault.Hits() > 0 })
	r.stop()
	require.ErrorIs(t, <-flushed, ErrStopped)
	require.ErrorIs(t, s.Send(context.Background(), record("flush", "k", 11, a)), ErrStopped)
	require.Equal(t, int64(10), a.n.Load(), "acks after Run stopped")
}

// TestSASL: each mechanism authenticates against a broker that requires
// it; a wrong password blocks (retried, logged) rather than rejecting.
func TestSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			k := testenv.StartKafka(t, kfake.EnableSASL(), kfake.Superuser(mech, "shipper", "s3cret"))
			cfg := saslConfig(t, k.Brokers(), mech, "s3cret")
			s := startShipper(t, cfg)
			a := newAcks()
			send(t, s.Shipper, record("auth", "k", 0, a))
			flush(t, s.Shipper)
			a.requireEach(t, []string{"k#0000"}, func(string) bool { return false })
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		k := testenv.StartKafka(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "shipper", "s3cret"))
		s := startShipper(t, saslConfig(t, k.Brokers(), "SCRAM-SHA-256", "wrong"))
		a := newAcks()
		send(t, s.Shipper, record("auth", "k", 0, a))
		testenv.WaitFor(t, 20*time.Second, "failed writes to be retried", func() bool {
			return sum(t, s.m.retries) >= 2
		})
		require.Zero(t, a.n.Load(), "a record acked (or rejected) with bad credentials")
	})
}

func saslConfig(t *testing.T, brokers []string, mech, password string) Config {
	t.Helper()
	cfg := parseFlags(t, "--kafka-brokers", strings.Join(brokers, ","),
		"--kafka-sasl-mechanism", strings.ToLower(mech), "--kafka-sasl-user", "shipper", "--kafka-sasl-password", password)
	require.NotNil(t, cfg.SASL)
	cfg.Linger = time.Millisecond
	cfg.RetryBackoffMin, cfg.RetryBackoffMax = time.Millisecond, 20*time.Millisecond
	return cfg
}

// TestTLS: --kafka-tls-ca makes the shipper verify the broker against that
// CA and ship over TLS.
func TestTLS(t *testing.T) {
	caFile, serverTLS := testCA(t)
	k := testenv.StartKafka(t, kfake.TLS(serverTLS))
	cfg := parseFlags(t, "--kafka-brokers", k.Brokers()[0], "--kafka-tls-ca", caFile)
	require.NotNil(t, cfg.TLS)
	cfg.Linger = time.Millisecond
	s := startShipper(t, cfg)
	a := newAcks()
	send(t, s.Shipper, record("tls", "k", 0, a))
	flush(t, s.Shipper)
	a.requireEach(t, []string{"k#0000"}, func(string) bool { return false })
}

// TestSendConcurrentWithStop: Sends racing with Run's end either succeed
// or return ErrStopped; none hangs. Run with -race.
func TestSendConcurrentWithStop(t *testing.T) {
	k := testenv.StartKafka(t)
	cfg := testConfig(k.Brokers())
	cfg.MaxInflightBytes = 4096
	s := startShipper(t, cfg)
	a := newAcks()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				err := s.Send(context.Background(), record("race", "k"+strconv.Itoa(g), i, a))
				if errors.Is(err, ErrStopped) {
					return
				}
				if !assert.NoError(t, err) {
					return
				}
			}
		})
	}
	testenv.WaitFor(t, 20*time.Second, "some records to be acked", func() bool { return a.n.Load() > 100 })
	s.stop()
	wg.Wait()
	a.requireOrderPerKey(t)
}

// TestEncodingRoundTripsEveryCodec: the shipper encodes record batches
// itself (produce.go); an independent client (franz-go) reads back, for
// every compression codec, exactly what was sent: keys (set, and nil),
// values (empty, binary, larger than an lz4 block), headers (several,
// empty value), in order per key and partition by murmur2 as Java clients;
// and Send copies records: the caller's slices are scribbled over after it.
func TestEncodingRoundTripsEveryCodec(t *testing.T) {
	k := testenv.StartKafka(t)
	big := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB: several lz4 blocks
	for _, codec := range []kafka.Compression{0, kafka.Gzip, kafka.Snappy, kafka.Lz4, kafka.Zstd} {
		name := "none"
		if codec != 0 {
			name = codec.String()
		}
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(k.Brokers())
			cfg.Compression = codec
			s := startShipper(t, cfg)
			topic := "codec-" + name
			type sent struct{ key, value, hdr, host string }
			var want []sent
			// Shared headers, for every other record; NewHeaders copied
			// them, so scribbling over hostValue changes nothing.
			hostValue := []byte("host-a")
			shared := NewHeaders(kafka.Header{Key: "host", Value: hostValue})
			copy(hostValue, "XXXXXX")
			for i := range 200 {
				key := fmt.Sprintf("key-%d", i%3)
				value := fmt.Sprintf("line %d \x00\xff binary", i)
				switch i {
				case 7:
					value = ""
				case 11:
					value = big
				}
				r := Record{Topic: topic, Key: []byte(key), Value: []byte(value),
					Headers: []kafka.Header{{Key: "offset", Value: []byte(strconv.Itoa(i))}, {Key: "empty", Value: []byte{}}}}
				host := ""
				if i%2 == 0 {
					r.Shared, host = shared, "host-a"
				}
				if i == 13 {
					r.Key = nil
					key = ""
				}
				if i == 7 {
					r.Value = nil // the tailer's empty line
				}
				send(t, s.Shipper, r)
				// Send copied the record: scribbling over the caller's
				// slices now must not change what reaches Kafka.
				for _, b := range [][]byte{r.Key, r.Value, r.Headers[0].Value} {
					for j := range b {
						b[j] = 'X'
					}
				}
				want = append(want, sent{key, value, strconv.Itoa(i), host})
			}
			flush(t, s.Shipper)
			got := testenv.ReadAll(t, k.Brokers(), topic)
			require.Len(t, got, len(want))
			byOffsetHeader := map[string]testenv.Record{}
			lastPerKey := map[string]int{}
			for _, r := range got {
				byOffsetHeader[r.Headers["offset"]] = r
				if r.Key == "" {
					continue
				}
				i, _ := strconv.Atoi(r.Headers["offset"])
				require.Greater(t, i+1, lastPerKey[r.Key], "order of key %s", r.Key)
				lastPerKey[r.Key] = i + 1
				wantPart := kafka.Murmur2Balancer{}.Balance(kafka.Message{Key: []byte(r.Key)}, 0, 1, 2)
				require.Equal(t, int32(wantPart), r.Partition, "murmur2 partition of %s", r.Key)
			}
			for _, w := range want {
				r, ok := byOffsetHeader[w.hdr]
				require.True(t, ok, "record %s arrived", w.hdr)
				require.Equal(t, w.key, r.Key)
				require.Equal(t, w.value, r.Value, "value of record %s", w.hdr)
				require.False(t, r.NullValue, "an empty line is an empty value, not a null one (a tombstone)")
				wantHeaders := map[string]string{"offset": w.hdr, "empty": ""}
				if w.host != "" {
					wantHeaders["host"] = w.host
				}
				require.Equal(t, wantHeaders, r.Headers)
			}
		})
	}
}

// TestReusedMemoryKeepsRecordsIntact: the shipper reuses arena chunks and
// entries once their records are acked. Records sent while others wait for
// retries (a partition refusing writes) must reach Kafka byte for byte: a
// chunk or entry reused too early would corrupt or lose them.
func TestReusedMemoryKeepsRecordsIntact(t *testing.T) {
	k := testenv.StartKafka(t)
	const topic = "reuse"
	require.NoError(t, k.CreateTopic(topic, 3, nil))
	k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{1},
		Err: kerr.NotLeaderForPartition, Count: 20})
	cfg := testConfig(k.Brokers())
	cfg.MaxInflightBytes = 1 << 20 // a few chunks in flight, many reused
	s := startShipper(t, cfg)
	a := newAcks()
	value := func(i int) string { return fmt.Sprintf("k%d#%05d %s", i%7, i, strings.Repeat(strconv.Itoa(i), 40)) }
	const n = 20_000 // about 6 MB: several times spareChunks chunks
	// Bounded: a reuse bug can wedge the shipper instead of corrupting.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var want []string
	for i := range n {
		id := fmt.Sprintf("k%d#%05d", i%7, i)
		r := Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%7), Value: []byte(value(i)),
			Headers: []kafka.Header{{Key: "i", Value: []byte(strconv.Itoa(i))}}, Ack: AckFunc(a.fn(id))}
		require.NoError(t, s.Send(ctx, r))
		want = append(want, id)
	}
	flush(t, s.Shipper)
	a.requireEach(t, want, func(string) bool { return false })
	got := testenv.ReadAll(t, k.Brokers(), topic)
	seen := map[int]bool{}
	for _, r := range got {
		i, err := strconv.Atoi(r.Headers["i"])
		require.NoError(t, err)
		require.Equal(t, value(i), r.Value, "record %d", i)
		seen[i] = true
	}
	require.Len(t, seen, n, "records in Kafka")
	require.NotZero(t, len(s.chunks.ch), "no arena chunk was recycled: the test proves nothing")
	s.mu.Lock()
	free := len(s.free)
	s.mu.Unlock()
	require.NotZero(t, free, "no entry was recycled: the test proves nothing")
}

// rangeAcks records how a RangeAcker was told: every token once, in
// order, errors one by one.
type rangeAcks struct {
	mu     sync.Mutex
	order  []uint64 // tokens in the order they were acked
	ranges int
	errs   map[uint64]error
}

func (r *rangeAcks) Ack(token uint64, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.order = append(r.order, token)
	if err != nil {
		r.errs[token] = err
	}
}

func (r *rangeAcks) AckRange(first, last uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ranges++
	for t := first; t <= last; t++ {
		r.order = append(r.order, t)
	}
}

// TestRangeAcks: a RangeAcker is told of consecutive successes at once,
// and still hears of every record exactly once, in Send order, with a
// rejected record's error on its own.
func TestRangeAcks(t *testing.T) {
	k := testenv.StartKafka(t)
	s := startShipper(t, testConfig(k.Brokers()))
	a, b := &rangeAcks{errs: map[uint64]error{}}, &rangeAcks{errs: map[uint64]error{}}
	const n = 500
	for i := range uint64(n) {
		to := a
		if i%50 == 49 {
			to = b // breaks a's runs now and then
		}
		r := Record{Topic: "ranges", Key: []byte("k"), Value: []byte(strconv.Itoa(int(i))), Ack: to, Token: i}
		if i == 300 {
			r.Value = make([]byte, 2<<20) // rejected: larger than a batch
		}
		send(t, s.Shipper, r)
	}
	flush(t, s.Shipper)
	var got []uint64
	for _, r := range []*rangeAcks{a, b} {
		r.mu.Lock()
		defer r.mu.Unlock()
		require.True(t, slices.IsSorted(r.order), "acks out of Send order")
		got = append(got, r.order...)
	}
	slices.Sort(got)
	require.Len(t, got, n)
	for i, tok := range got {
		require.Equal(t, uint64(i), tok, "every token acked exactly once")
	}
	require.ErrorIs(t, a.errs[300], ErrRejected)
	require.Len(t, a.errs, 1)
	require.Empty(t, b.errs)
	require.Less(t, a.ranges, n/10, "successes were not told in ranges")
}
