package testenv

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEtcdRoundTrip(t *testing.T) {
	start := time.Now()
	e := StartEtcd(t)
	t.Logf("etcd ready in %v", time.Since(start))
	cli := e.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := cli.Put(ctx, "/k", "v")
	require.NoError(t, err)
	resp, err := cli.Get(ctx, "/k")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, "v", string(resp.Kvs[0].Value))
}

func TestKafkaReadAll(t *testing.T) {
	start := time.Now()
	k := StartKafka(t)
	t.Logf("kafka ready in %v", time.Since(start))
	require.Empty(t, ReadAll(t, k.Brokers(), "nothing-here"))

	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers()...), kgo.AllowAutoTopicCreation())
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 50
	for i := range n {
		r := &kgo.Record{Topic: "t", Key: []byte(fmt.Sprint(i % 5)), Value: []byte(fmt.Sprint(i)),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}}}
		require.NoError(t, cl.ProduceSync(ctx, r).FirstErr())
	}
	recs := ReadAll(t, k.Brokers(), "t")
	require.Len(t, recs, n)
	seen := map[string]bool{}
	for _, r := range recs {
		require.Equal(t, r.Value, r.Headers["seq"], "headers must round-trip")
		seen[r.Value] = true
	}
	require.Len(t, seen, n)
}
