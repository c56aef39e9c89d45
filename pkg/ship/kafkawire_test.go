package ship

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/logferry/logferry/internal/testenv"
)

// producedSet is one partition's record set of a produce request, as the
// broker received it.
type producedSet struct {
	version int16
	topic   string
	set     []byte
}

// captureProduce records every produce request's record sets, and lets the
// broker handle the request as usual.
func captureProduce(k *testenv.Kafka) func(topic string) []producedSet {
	var mu sync.Mutex
	var sets []producedSet
	k.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		r := req.(*kmsg.ProduceRequest)
		mu.Lock()
		defer mu.Unlock()
		for _, tp := range r.Topics {
			for _, p := range tp.Partitions {
				sets = append(sets, producedSet{r.Version, tp.Topic, bytes.Clone(p.Records)})
			}
		}
		return nil, nil, false
	})
	return func(topic string) []producedSet {
		mu.Lock()
		defer mu.Unlock()
		var out []producedSet
		for _, s := range sets {
			if s.topic == topic {
				out = append(out, s)
			}
		}
		return out
	}
}

// TestBatchesMeetKafkaRules sends, with every codec, a batch of one record,
// records with empty values, null keys and empty or null header values, a
// record of 1 MB that does not compress and one that does, and a run of
// records that fills several batches, and reads every produce request the
// broker got with the strict reader of kafkarules_test.go: every batch must
// pass, and hold exactly the records sent.
func TestBatchesMeetKafkaRules(t *testing.T) {
	k := testenv.StartKafka(t)
	sets := captureProduce(k)
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 1_000_000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	hdrs := []kafka.Header{{Key: "file", Value: []byte("f1")}, {Key: "empty", Value: []byte{}}, {Key: "null", Value: nil}}
	scenarios := map[string][]Record{
		"one record":     {{Key: []byte("k"), Value: []byte("the only line"), Headers: hdrs}},
		"empty values":   {{Key: []byte("k"), Value: nil}, {Key: nil, Value: []byte{}}, {Key: []byte{}, Value: []byte("x"), Headers: hdrs}},
		"1 MB random":    {{Key: []byte("k"), Value: random, Headers: hdrs}},
		"1 MB text":      {{Key: []byte("k"), Value: []byte(strings.Repeat("GET /index.html 200\n", 50_000)), Headers: hdrs}},
		"many, 3 blocks": nil,
	}
	for i := range 4000 {
		scenarios["many, 3 blocks"] = append(scenarios["many, 3 blocks"], Record{Key: fmt.Appendf(nil, "file-%d", i%5),
			Value: fmt.Appendf(nil, "%06d %s", i, random[i:i+200]), Shared: NewHeaders(kafka.Header{Key: "host", Value: []byte("h1")}), Headers: hdrs})
	}
	codecs := map[string]kafka.Compression{"none": 0, "gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4, "zstd": kafka.Zstd}
	for name, codec := range codecs {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(k.Brokers())
			cfg.Compression = codec
			cfg.BatchBytes = MaxBatchBytes
			s := startShipper(t, cfg)
			i := 0
			for scenario, recs := range scenarios {
				i++
				topic := fmt.Sprintf("rules-%s-%d", name, i)
				for _, r := range recs {
					r.Topic = topic
					send(t, s.Shipper, r)
				}
				flush(t, s.Shipper)
				got := sets(topic)
				require.NotEmpty(t, got, scenario)
				var values []string
				for _, ps := range got {
					require.GreaterOrEqual(t, ps.version, int16(3), "produce v3 is the first to carry v2 batches")
					wire, err := checkRecordSet(ps.set, time.Now())
					require.NoError(t, err, "%s, %s: a batch Kafka would refuse", name, scenario)
					for _, w := range wire {
						require.NotNil(t, w.Value, "values are never null (a null value is a tombstone)")
						values = append(values, string(w.Value))
					}
				}
				var want []string
				for _, r := range recs {
					want = append(want, string(r.Value))
				}
				require.ElementsMatch(t, want, values, "%s: the records sent, each once", scenario)
			}
		})
	}
}

// TestKafkaRulesRefuseBrokenBatches: the strict reader is strict. Each
// fault, made in a batch the shipper wrote, is one a broker refuses.
func TestKafkaRulesRefuseBrokenBatches(t *testing.T) {
	k := testenv.StartKafka(t)
	sets := captureProduce(k)
	var good = map[string][]byte{}
	for codec, name := range map[kafka.Compression]string{0: "0", kafka.Lz4: "3"} {
		cfg := testConfig(k.Brokers())
		cfg.Compression = codec
		s := startShipper(t, cfg)
		topic := "broken-" + name
		for i := range 3 {
			send(t, s.Shipper, Record{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, "line %d", i)})
		}
		flush(t, s.Shipper)
		got := sets(topic)
		require.Len(t, got, 1)
		_, err := checkRecordSet(got[0].set, time.Now())
		require.NoError(t, err)
		good[name] = got[0].set
	}
	recrc := func(b []byte) {
		binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	}
	for _, tc := range []struct {
		name, codec, want string
		breakIt           func(b []byte) []byte // b is the batch; CRC not recomputed unless the fault says so
	}{
		{"crc", "0", "CRC-32C", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"magic", "0", "magic 1", func(b []byte) []byte { b[16] = 1; return b }},
		{"last offset delta", "0", "lastOffsetDelta 1", func(b []byte) []byte { b[26] = 1; recrc(b); return b }},
		{"producer id", "0", "producer id 7", func(b []byte) []byte {
			binary.BigEndian.PutUint64(b[43:], 7)
			recrc(b)
			return b
		}},
		{"record count", "0", "bytes after the 2 records", func(b []byte) []byte {
			b[60], b[26] = 2, 1
			recrc(b)
			return b
		}},
		{"offset delta", "0", "offsetDelta 0, want its index 1", func(b []byte) []byte {
			// Record 1 starts after record 0: its length varint, then attributes, timestamp delta, offset delta.
			r0 := int(b[61]>>1) + 1
			b[61+r0+3] = 0
			recrc(b)
			return b
		}},
		{"max timestamp", "0", "maxTimestamp", func(b []byte) []byte { b[42]++; recrc(b); return b }},
		{"lz4 header checksum", "3", "header checksum", func(b []byte) []byte { b[61+6]++; recrc(b); return b }},
		{"lz4 dependent blocks", "3", "dependent blocks", func(b []byte) []byte { b[61+4] &^= 0x20; recrc(b); return b }},
		{"lz4 version", "3", "version 2", func(b []byte) []byte { b[61+4] = b[61+4]&0x3f | 0x80; recrc(b); return b }},
		{"lz4 end mark", "3", "end mark", func(b []byte) []byte {
			b = b[:len(b)-4]
			binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
			recrc(b)
			return b
		}},
	} {
		set := bytes.Clone(good[tc.codec])
		set = tc.breakIt(set)
		_, err := checkRecordSet(set, time.Now())
		require.ErrorContains(t, err, tc.want, tc.name)
	}
}
