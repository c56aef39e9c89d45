package ship

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/logferry/logferry/internal/testenv"
)

// TestClosedGateDropsUnwritten: while the gate is closed, no record reaches
// Kafka, also one that was waiting for a retry when the gate closed; each
// is acked once with ErrFenced (never as written, never as rejected), and
// records sent once the gate opens again are written.
func TestClosedGateDropsUnwritten(t *testing.T) {
	const topic = "gated"
	k := testenv.StartKafka(t)
	require.NoError(t, k.CreateTopic(topic, 1, nil))
	var open atomic.Bool
	open.Store(true)
	s, reg := newShipper(t, testConfig(k.Brokers()))
	s.SetGate(open.Load)
	r := run(t, s, reg)
	a := newAcks()

	batch := func(key string) (ids []string) {
		for i := range 50 {
			send(t, r.Shipper, record(topic, key, i, a))
			ids = append(ids, fmt.Sprintf("%s#%04d", key, i))
		}
		return ids
	}
	before := batch("a")
	flush(t, r.Shipper)

	// Kafka refuses writes, so records wait for a retry; then the gate
	// closes (the lease could not be proved alive) and the fault goes.
	fault := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	retried := batch("b")
	testenv.WaitFor(t, 10*time.Second, "a failed write of every b", func() bool {
		return testutil.ToFloat64(s.m.retries.WithLabelValues("not_enough_replicas")) >= float64(len(retried))
	})
	open.Store(false)
	closed := batch("c")
	// A request already on the wire when the gate closed may still be
	// written: the fault stays until every record was dropped.
	testenv.WaitFor(t, 10*time.Second, "the records to be dropped", func() bool {
		return testutil.ToFloat64(s.m.fenced) >= float64(len(retried)+len(closed))
	})
	fault.Remove()
	flush(t, r.Shipper)
	open.Store(true)
	after := batch("d")
	flush(t, r.Shipper)

	dropped := append(append([]string{}, retried...), closed...)
	a.requireEach(t, append(append(append([]string{}, before...), dropped...), after...), func(id string) bool {
		return id[0] == 'b' || id[0] == 'c'
	})
	a.mu.Lock()
	for _, id := range dropped {
		require.ErrorIs(t, a.errs[id], ErrFenced, id)
		require.False(t, errors.Is(a.errs[id], ErrRejected), "a dropped record is not rejected for good: %s", id)
	}
	a.mu.Unlock()
	got := testenv.ReadAll(t, k.Brokers(), topic)
	requireInKafkaInOrder(t, got, append(append([]string{}, before...), after...))
	require.Equal(t, float64(len(dropped)), testutil.ToFloat64(s.m.fenced))
}

// TestFenceDropsWhatWasAcceptedBefore: records accepted before Fence that
// are not on the wire yet are dropped (ErrFenced), even though the gate is
// open; records accepted after it are written.
func TestFenceDropsWhatWasAcceptedBefore(t *testing.T) {
	const topic = "fenced"
	k := testenv.StartKafka(t)
	require.NoError(t, k.CreateTopic(topic, 1, nil))
	r := startShipper(t, testConfig(k.Brokers()))
	a := newAcks()
	var old, fresh []string
	fault := k.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.NotEnoughReplicas, Count: -1})
	for i := range 30 {
		send(t, r.Shipper, record(topic, "k", i, a))
		old = append(old, fmt.Sprintf("k#%04d", i))
	}
	testenv.WaitFor(t, 10*time.Second, "a failed write of every record", func() bool {
		return testutil.ToFloat64(r.m.retries.WithLabelValues("not_enough_replicas")) >= float64(len(old))
	})
	r.Fence()
	for i := 30; i < 60; i++ {
		send(t, r.Shipper, record(topic, "k", i, a))
		fresh = append(fresh, fmt.Sprintf("k#%04d", i))
	}
	testenv.WaitFor(t, 10*time.Second, "the old records to be dropped", func() bool {
		return testutil.ToFloat64(r.m.fenced) >= float64(len(old))
	})
	fault.Remove()
	flush(t, r.Shipper)
	a.requireEach(t, append(append([]string{}, old...), fresh...), func(id string) bool { return id < "k#0030" })
	a.mu.Lock()
	for _, id := range old {
		require.ErrorIs(t, a.errs[id], ErrFenced, id)
	}
	a.mu.Unlock()
	requireInKafkaInOrder(t, testenv.ReadAll(t, k.Brokers(), topic), fresh)
}
