package ship

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/logferry/logferry/internal/testenv"
)

// BenchmarkShip ships 100k records of about 150 B with a header, acks=all,
// to an in-process kfake broker (3 partitions), from 4 senders with 25 keys
// each, and reports records/s and MB/s of values until the last Ack.
func BenchmarkShip(b *testing.B) {
	if testing.Short() {
		b.Skip("ships 100k records to a broker")
	}
	for _, comp := range []string{"none", "lz4", "snappy"} {
		b.Run("compression="+comp, func(b *testing.B) {
			c, err := ParseCompression(comp)
			if err != nil {
				b.Fatal(err)
			}
			benchShip(b, c)
		})
	}
}

func benchShip(b *testing.B, comp kafka.Compression) {
	const records, senders, keysPerSender = 100_000, 4, 25
	k := testenv.StartKafka(b)
	cfg := DefaultConfig()
	cfg.Brokers = k.Brokers()
	cfg.Compression = comp
	s := startShipper(b, cfg)

	value := []byte(strings.Repeat("127.0.0.1 - - [10/Oct/2025:13:55:36 +0000] \"GET /index.html HTTP/1.1\" 200 2326 ", 2)[:150])
	var acked atomic.Int64
	ack := func(err error) {
		if err != nil {
			panic(err)
		}
		acked.Add(1)
	}
	topic := "bench"
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var wg sync.WaitGroup
		for g := range senders {
			wg.Go(func() {
				for j := range records / senders {
					key := fmt.Appendf(nil, "host-1/var/log/app-%d-%d.log", g, j%keysPerSender)
					r := Record{Topic: topic, Key: key, Value: value,
						Headers: []kafka.Header{{Key: "offset", Value: fmt.Appendf(nil, "%d", j*151)}}, Ack: AckFunc(ack)}
					if err := s.Send(context.Background(), r); err != nil {
						panic(err)
					}
				}
			})
		}
		wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		elapsed += time.Since(start)
	}
	b.StopTimer()
	if got := acked.Load(); got != int64(records*b.N) {
		b.Fatalf("acked %d records, sent %d", got, records*b.N)
	}
	sec := elapsed.Seconds()
	b.ReportMetric(float64(records*b.N)/sec, "records/s")
	b.ReportMetric(float64(records*b.N*len(value))/sec/1e6, "MB/s")
	b.ReportMetric(0, "ns/op")
}
