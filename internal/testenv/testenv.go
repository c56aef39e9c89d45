// Package testenv gives tests the real coordination and data planes: an etcd
// server and a Kafka-protocol broker, both in-process on free loopback
// ports, torn down in the right order by t.Cleanup.
//
// Invariants: every client handed out by Etcd.Client is closed before the
// server (cleanups run last-in first-out, and the server registers first);
// nothing here mocks etcd or Kafka.
package testenv

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/logferry/logferry/internal/devstack"
)

// Etcd is a test's etcd server.
type Etcd struct {
	*devstack.Etcd
	t testing.TB
}

// StartEtcd starts a one-member etcd in t.TempDir() with fast ticks.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	e, err := devstack.StartEtcd(devstack.EtcdOptions{Dir: t.TempDir(), Fast: true})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	return &Etcd{Etcd: e, t: t}
}

// Endpoints is the client endpoint list.
func (e *Etcd) Endpoints() []string { return []string{e.Endpoint()} }

// Client returns a new client, closed when the test ends (before the server).
func (e *Etcd) Client() *clientv3.Client {
	e.t.Helper()
	return e.ClientAt(e.Endpoints()...)
}

// ClientAt returns a client of endpoints (a Proxy's address, or one where
// nothing listens), closed when the test ends (before the server).
func (e *Etcd) ClientAt(endpoints ...string) *clientv3.Client {
	e.t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		e.t.Fatalf("etcd client: %v", err)
	}
	e.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Kafka is a test's broker.
type Kafka struct {
	*kfake.Cluster
	t testing.TB
}

// StartKafka starts a one-broker Kafka-protocol cluster; auto-created topics
// get 3 partitions. opts are appended to the defaults.
func StartKafka(t testing.TB, opts ...kfake.Opt) *Kafka {
	t.Helper()
	c, err := devstack.StartKafka(devstack.KafkaOptions{Extra: opts})
	if err != nil {
		t.Fatalf("start kafka: %v", err)
	}
	t.Cleanup(c.Close)
	return &Kafka{Cluster: c, t: t}
}

// Brokers is the seed broker list.
func (k *Kafka) Brokers() []string { return k.ListenAddrs() }

// Record is one Kafka record as a test sees it.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       string
	Value     string
	NullValue bool // the value was null, not empty
	Headers   map[string]string
}

// ReadAll returns every record of topic that is in the log now, ordered by
// partition and offset. A topic that does not exist reads as empty.
func ReadAll(t testing.TB, brokers []string, topic string) []Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("kafka client: %v", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	want := map[int32]int64{}
	start := map[string]map[int32]kgo.Offset{topic: {}}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil && o.Offset > 0 {
			want[o.Partition] = o.Offset
			start[topic][o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return nil
	}
	consumer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(start))
	if err != nil {
		t.Fatalf("kafka consumer: %v", err)
	}
	defer consumer.Close()
	var out []Record
	for len(want) > 0 {
		fetches := consumer.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: timed out with partitions %v not read to their end", topic, want)
		}
		fetches.EachError(func(topic string, p int32, err error) {
			t.Fatalf("read %s[%d]: %v", topic, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			rec := Record{
				Topic: r.Topic, Partition: r.Partition, Offset: r.Offset,
				Key: string(r.Key), Value: string(r.Value), NullValue: r.Value == nil, Headers: map[string]string{},
			}
			for _, h := range r.Headers {
				rec.Headers[h.Key] = string(h.Value)
			}
			out = append(out, rec)
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Partition != out[j].Partition {
			return out[i].Partition < out[j].Partition
		}
		return out[i].Offset < out[j].Offset
	})
	return out
}

// WaitFor polls cond every 10 ms until it holds or the deadline passes, then
// fails the test with what. It is a condition wait with a deadline, not a
// sleep: it returns as soon as cond holds.
func WaitFor(t testing.TB, deadline time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Await(deadline, cond) {
		t.Fatalf("timed out after %v waiting for %s", deadline, what)
	}
}

// Await polls cond every 10 ms until it holds (true) or deadline passes
// (false), for callers that explain a timeout themselves.
func Await(deadline time.Duration, cond func() bool) bool {
	end := time.Now().Add(deadline)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(end) {
			return false
		}
		<-tick.C
	}
	return true
}
