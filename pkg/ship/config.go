package ship

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
)

// MaxBatchBytes is the largest allowed BatchBytes: the default
// max.message.bytes of a Kafka topic (and of kfake). A produce request whose
// batch for one partition is larger is rejected whole with MESSAGE_TOO_LARGE,
// so a larger BatchBytes would make every full batch fail.
const MaxBatchBytes = 1_048_588

// maxBatchSize bounds BatchSize: the shipper keeps up to twice BatchSize
// spare entries (about 170 B each) for the next records.
const maxBatchSize = 100_000

// Sentinel errors. Errors returned by this package wrap them.
var (
	// ErrConfig marks an unusable Config or flag value.
	ErrConfig = errors.New("ship: bad config")
	// ErrStopped is returned by Send and Flush once Run has returned.
	ErrStopped = errors.New("ship: shipper stopped")
	// ErrRunning is returned by a second call of Run.
	ErrRunning = errors.New("ship: Run called more than once")
	// ErrRejected is what every error passed to an Ack matches (errors.Is):
	// the record was not written and will not be retried.
	ErrRejected = errors.New("ship: record rejected")
	// ErrFenced is what an Ack gets for a record dropped unwritten because
	// the gate (SetGate) was closed when its turn came: the caller has lost
	// the right to write it and must read it again, never count it as done.
	ErrFenced = errors.New("ship: record dropped: the gate is closed (lease not proved alive)")
)

// Acks is how many replicas must have a record before Kafka acknowledges it.
// The zero value is AcksAll, so a Config built by hand cannot silently fall
// back to kafka-go's default, fire-and-forget.
type Acks int8

const (
	// AcksAll waits for every in-sync replica (acks=all, -1). The default.
	AcksAll Acks = iota
	// AcksLeader waits for the partition leader only (acks=1): a record
	// acked just before the leader dies can be lost.
	AcksLeader
	// AcksNone does not wait at all (acks=0): an Ack then only means the
	// record was written to a socket. Never use it with checkpoints you trust.
	AcksNone
)

// ParseAcks reads "all" (or "-1"), "one" (or "1", "leader") and "none" (or "0").
func ParseAcks(s string) (Acks, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "all", "-1":
		return AcksAll, nil
	case "one", "1", "leader":
		return AcksLeader, nil
	case "none", "0":
		return AcksNone, nil
	}
	return 0, fmt.Errorf("%q: want all, one or none", s)
}

func (a Acks) String() string {
	switch a {
	case AcksAll:
		return "all"
	case AcksLeader:
		return "one"
	case AcksNone:
		return "none"
	}
	return fmt.Sprintf("Acks(%d)", int8(a))
}

func (a Acks) required() kafka.RequiredAcks {
	switch a {
	case AcksLeader:
		return kafka.RequireOne
	case AcksNone:
		return kafka.RequireNone
	}
	return kafka.RequireAll
}

// compressions are the codecs --kafka-compression accepts, by name.
var compressions = map[string]kafka.Compression{
	"none":   0,
	"gzip":   kafka.Gzip,
	"snappy": kafka.Snappy,
	"lz4":    kafka.Lz4,
	"zstd":   kafka.Zstd,
}

// ParseCompression reads none, gzip, snappy, lz4 or zstd.
func ParseCompression(s string) (kafka.Compression, error) {
	c, ok := compressions[strings.ToLower(strings.TrimSpace(s))]
	if !ok {
		return 0, fmt.Errorf("%q: want none, gzip, snappy, lz4 or zstd", s)
	}
	return c, nil
}

func compressionName(c kafka.Compression) string {
	if c == 0 {
		return "none"
	}
	return c.String()
}

// Config configures a Shipper. Start from DefaultConfig; Flags.Config builds
// one from the command line.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// ClientID is sent to the brokers (their logs and quotas use it).
	ClientID string
	// Acks: see Acks. Default AcksAll.
	Acks Acks
	// BatchSize and BatchBytes bound one batch: at most this many records,
	// and at most this many bytes as kafka-go counts them (key, value,
	// headers and about 22 bytes of framing per record). BatchBytes must not
	// exceed MaxBatchBytes.
	BatchSize  int
	BatchBytes int64
	// Linger is how long a batch that is not full waits for more records.
	// Zero sends at once.
	Linger time.Duration
	// Compression codec of produced batches; 0 is none.
	Compression kafka.Compression
	// RetryBackoffMin and RetryBackoffMax bound the wait between failed
	// attempts to write the same records; it doubles from Min to Max.
	RetryBackoffMin time.Duration
	RetryBackoffMax time.Duration
	// WriteTimeout bounds one produce or metadata request. It is also how
	// long Run may wait, after its context ends, for a request on the wire.
	WriteTimeout time.Duration
	// DialTimeout bounds a connection, TLS handshake and SASL included.
	DialTimeout time.Duration
	// AutoCreateTopics lets the broker create a missing topic (if its
	// auto.create.topics.enable allows). Without it a missing topic is
	// UNKNOWN_TOPIC_OR_PARTITION, which is retried for ever.
	AutoCreateTopics bool
	// MaxInflightBytes bounds the bytes of records accepted by Send and not
	// yet acked; Send blocks beyond it.
	MaxInflightBytes int64
	// TLS, when set, is used for every broker connection.
	TLS *tls.Config
	// SASL, when set, authenticates every broker connection.
	SASL sasl.Mechanism
}

// DefaultConfig returns the defaults of the command-line flags.
//
// Compression defaults to lz4: log lines compress several times over, which
// cuts network and broker disk by as much, and lz4 costs the least CPU of the
// codecs for that; every broker and client since Kafka 0.10 reads it (zstd
// needs 2.1). The topic's max.message.bytes then applies to compressed
// batches, which leaves BatchBytes even more headroom.
func DefaultConfig() Config {
	return Config{
		Brokers:  []string{"127.0.0.1:9092"},
		ClientID: "logferry",
		Acks:     AcksAll,
		// librdkafka's defaults (batch.num.messages, batch.size): with
		// lines of typical length the byte limit binds first, at about
		// 3,500 lines a batch, which ships a file faster and with less CPU
		// per line than 2,000 did (cmd/logagent BenchmarkShipFile).
		BatchSize:  10_000,
		BatchBytes: 1_000_000,
		// A busy file fills batches while the one request in flight is
		// answered, so linger only delays quiet files. The write->Kafka
		// p50/p99 of 1,000 files at 1 line/s (BenchmarkFootprint) was
		// 6.0/12.2 ms with 10 ms, 3.7/7.0 with 5 (librdkafka's default)
		// and 2.5/4.8 with 2, against rsyslog's 3.2/6.1 in the same runs;
		// one big file ships as fast with 2 as with 10 (BenchmarkShipFile).
		Linger:           2 * time.Millisecond,
		Compression:      kafka.Lz4,
		RetryBackoffMin:  100 * time.Millisecond,
		RetryBackoffMax:  5 * time.Second,
		WriteTimeout:     10 * time.Second,
		DialTimeout:      5 * time.Second,
		AutoCreateTopics: true,
		// A few batches of look-ahead keep the one batch in flight fed
		// (16 MiB is about 3.5 full 1 MB batches of 150-byte file lines,
		// each line weighing its record's bytes plus 1 KiB); more only grew
		// the heap, to a 128 MiB peak RSS at 64 MiB (cmd/logagent
		// BenchmarkShipFile).
		MaxInflightBytes: 16 << 20,
	}
}

// Validate checks every field. Errors wrap ErrConfig and name the
// command-line flag that sets the field.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if len(c.Brokers) == 0 {
		return bad("--kafka-brokers: at least one broker is required")
	}
	for _, b := range c.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			return bad("--kafka-brokers %q: want host:port", b)
		}
	}
	if c.Acks < AcksAll || c.Acks > AcksNone {
		return bad("--kafka-acks %v: want all, one or none", c.Acks)
	}
	if c.BatchSize < 1 || c.BatchSize > maxBatchSize {
		return bad("--kafka-batch-size %d: want 1 to %d records", c.BatchSize, maxBatchSize)
	}
	if c.BatchBytes < 1 || c.BatchBytes > MaxBatchBytes {
		return bad("--kafka-batch-bytes %d: want 1 to %d, the default max.message.bytes of a Kafka topic; "+
			"a larger batch is rejected whole with MESSAGE_TOO_LARGE", c.BatchBytes, MaxBatchBytes)
	}
	if c.Linger < 0 || c.Linger > time.Minute {
		return bad("--kafka-linger %v: want 0 to 1m", c.Linger)
	}
	if c.Compression != 0 && c.Compression.Codec() == nil {
		return bad("--kafka-compression %d: unknown codec", int8(c.Compression))
	}
	if c.RetryBackoffMin <= 0 {
		return bad("retry backoff minimum %v: must be positive", c.RetryBackoffMin)
	}
	if c.RetryBackoffMax < c.RetryBackoffMin {
		return bad("--kafka-retry-backoff-max %v: below the minimum backoff %v", c.RetryBackoffMax, c.RetryBackoffMin)
	}
	if c.WriteTimeout <= 0 {
		return bad("--kafka-write-timeout %v: must be positive", c.WriteTimeout)
	}
	if c.DialTimeout <= 0 {
		return bad("dial timeout %v: must be positive", c.DialTimeout)
	}
	if c.MaxInflightBytes < 1 {
		return bad("--max-inflight-bytes %d: must be positive", c.MaxInflightBytes)
	}
	return nil
}
