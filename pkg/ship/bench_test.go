package ship

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"
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

// BenchmarkLZ4Compressors compresses record batches as the agent encodes
// them (access-log lines with their five headers) with pierrec/lz4's
// default block compressor and with CompressorCCompat, which the shipper
// uses, and prints ns per record and the ratio.
func BenchmarkLZ4Compressors(b *testing.B) {
	var recs []byte
	r := rand.New(rand.NewPCG(1, 2)) // the lines of cmd/logagent's BenchmarkShipFile
	methods := []string{"GET", "GET", "GET", "POST", "PUT"}
	for i := range 4000 {
		e := &entry{body: appendBody(nil, &Record{
			Key: []byte("bench/2049:131073:9f86d081884c7d65"),
			Value: fmt.Appendf(nil, "10.%d.%d.%d - - [21/Nov/2026:10:%02d:%02d +0000] \"%s /api/v1/items/%d?page=%d HTTP/1.1\" %d %d \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" %d",
				r.IntN(256), r.IntN(256), r.IntN(256), (i/60)%60, i%60, methods[r.IntN(len(methods))], r.IntN(100000), r.IntN(50),
				[]int{200, 200, 200, 304, 404, 500}[r.IntN(6)], r.IntN(50000), i),
			Headers: []kafka.Header{{Key: "host", Value: []byte("10.0.0.7")}, {Key: "path", Value: []byte("/var/log/nginx/access.log")},
				{Key: "file", Value: []byte("bench/2049:131073:9f86d081884c7d65")}, {Key: "offset", Value: strconv.AppendInt(nil, int64(i)*151, 10)},
				{Key: "topic", Value: []byte("nginx")}},
		})}
		recs = appendRecord(recs, e, int32(i))
	}
	for _, c := range []struct {
		name string
		c    interface {
			CompressBlock(src, dst []byte) (int, error)
		}
	}{{"pierrec-default", new(lz4.Compressor)}, {"ccompat", new(lz4.CompressorCCompat)}} {
		b.Run(c.name, func(b *testing.B) {
			dst := make([]byte, lz4.CompressBlockBound(lz4BlockSize))
			out := 0
			b.SetBytes(int64(len(recs)))
			for b.Loop() {
				out = 0
				for blk := recs; len(blk) > 0; blk = blk[min(len(blk), lz4BlockSize):] {
					n, err := c.c.CompressBlock(blk[:min(len(blk), lz4BlockSize)], dst)
					if err != nil {
						b.Fatal(err)
					}
					out += n
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/4000, "ns/record")
			b.ReportMetric(float64(len(recs))/float64(out), "ratio")
		})
	}
}
