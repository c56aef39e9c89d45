package ship

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/spf13/pflag"
	fsasl "github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Flags are the Kafka producer settings of the command line.
type Flags struct {
	Brokers          []string
	ClientID         string
	Acks             string
	BatchSize        int
	BatchBytes       int64
	Linger           time.Duration
	Compression      string
	RetryBackoffMax  time.Duration
	WriteTimeout     time.Duration
	AutoCreateTopics bool
	MaxInflightBytes int64

	TLS                   bool
	TLSCA                 string
	TLSCert               string
	TLSKey                string
	TLSInsecureSkipVerify bool

	SASLMechanism string
	SASLUser      string
	SASLPassword  string
}

// Register defines the flags on fs, with DefaultConfig's values as defaults.
func (f *Flags) Register(fs *pflag.FlagSet) {
	d := DefaultConfig()
	fs.StringSliceVar(&f.Brokers, "kafka-brokers", d.Brokers, "Kafka seed brokers, host:port, comma-separated or repeated")
	fs.StringVar(&f.ClientID, "kafka-client-id", d.ClientID, "client id sent to the Kafka brokers (shows in their logs and quotas)")
	fs.StringVar(&f.Acks, "kafka-acks", d.Acks.String(), "replicas that must have a record before Kafka acknowledges it and the offset may be checkpointed: "+
		"all (every in-sync replica), one (the leader only; may lose acked records if it dies) or none (no acknowledgement; loses data)")
	fs.IntVar(&f.BatchSize, "kafka-batch-size", d.BatchSize, "most records in one batch")
	fs.Int64Var(&f.BatchBytes, "kafka-batch-bytes", d.BatchBytes, fmt.Sprintf("most bytes in one batch (key, value, headers and ~22 B of framing per record), at most %d, "+
		"the default max.message.bytes of a topic; a record larger than this is rejected", MaxBatchBytes))
	fs.DurationVar(&f.Linger, "kafka-linger", d.Linger, "how long a batch that is not full waits for more records; 0 sends at once")
	fs.StringVar(&f.Compression, "kafka-compression", compressionName(d.Compression), "compression of produced batches: none, gzip, snappy, lz4 or zstd (zstd needs Kafka 2.1 or later)")
	fs.DurationVar(&f.RetryBackoffMax, "kafka-retry-backoff-max", d.RetryBackoffMax, "longest wait between retries of a failed write; retries start at 100ms, double up to this, and go on until Kafka accepts")
	fs.DurationVar(&f.WriteTimeout, "kafka-write-timeout", d.WriteTimeout, "deadline of one produce or metadata request; a timed-out write is retried")
	fs.BoolVar(&f.AutoCreateTopics, "kafka-auto-create-topics", d.AutoCreateTopics, "let the brokers create a missing topic (if their auto.create.topics.enable allows); "+
		"otherwise records for a missing topic wait until it exists")
	fs.Int64Var(&f.MaxInflightBytes, "max-inflight-bytes", d.MaxInflightBytes, "most bytes of records read but not yet acknowledged by Kafka; reading pauses at this bound (for example while Kafka is unreachable)")

	fs.BoolVar(&f.TLS, "kafka-tls", false, "connect to Kafka with TLS, verifying brokers against the system roots (implied by the other --kafka-tls-* flags)")
	fs.StringVar(&f.TLSCA, "kafka-tls-ca", "", "CA bundle (PEM) to verify the Kafka brokers' certificates instead of the system roots; enables TLS")
	fs.StringVar(&f.TLSCert, "kafka-tls-cert", "", "client certificate (PEM) for Kafka; enables TLS, needs --kafka-tls-key")
	fs.StringVar(&f.TLSKey, "kafka-tls-key", "", "private key (PEM) of --kafka-tls-cert")
	fs.BoolVar(&f.TLSInsecureSkipVerify, "kafka-tls-insecure-skip-verify", false, "enable TLS but do not verify the brokers' certificates (testing only: anyone on the path can read and alter the data)")

	fs.StringVar(&f.SASLMechanism, "kafka-sasl-mechanism", "", "SASL authentication with Kafka: plain, scram-sha-256 or scram-sha-512 (default none); plain sends the password as is, so use it with TLS")
	fs.StringVar(&f.SASLUser, "kafka-sasl-user", "", "SASL user name, for --kafka-sasl-mechanism")
	fs.StringVar(&f.SASLPassword, "kafka-sasl-password", "", "SASL password, for --kafka-sasl-user; prefer the environment variable to the flag")
}

// Config checks the flags and returns the configuration. Errors wrap
// ErrConfig and name the flag and the bad value. Certificate and key files
// are read here.
func (f *Flags) Config() (Config, error) {
	cfg := DefaultConfig()
	cfg.Brokers = nil
	for _, b := range f.Brokers {
		if b = strings.TrimSpace(b); b != "" {
			cfg.Brokers = append(cfg.Brokers, b)
		}
	}
	cfg.ClientID = f.ClientID
	acks, err := ParseAcks(f.Acks)
	if err != nil {
		return Config{}, fmt.Errorf("%w: --kafka-acks %w", ErrConfig, err)
	}
	cfg.Acks = acks
	cfg.BatchSize = f.BatchSize
	cfg.BatchBytes = f.BatchBytes
	cfg.Linger = f.Linger
	comp, err := ParseCompression(f.Compression)
	if err != nil {
		return Config{}, fmt.Errorf("%w: --kafka-compression %w", ErrConfig, err)
	}
	cfg.Compression = comp
	cfg.RetryBackoffMax = f.RetryBackoffMax
	if f.RetryBackoffMax > 0 {
		// A maximum below the usual 100ms start is a request for fast retries.
		cfg.RetryBackoffMin = min(cfg.RetryBackoffMin, f.RetryBackoffMax)
	}
	cfg.WriteTimeout = f.WriteTimeout
	cfg.AutoCreateTopics = f.AutoCreateTopics
	cfg.MaxInflightBytes = f.MaxInflightBytes
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	if cfg.TLS, err = f.tlsConfig(); err != nil {
		return Config{}, err
	}
	if cfg.SASL, err = f.saslMechanism(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func (f *Flags) tlsConfig() (*tls.Config, error) {
	if !f.TLS && f.TLSCA == "" && f.TLSCert == "" && f.TLSKey == "" && !f.TLSInsecureSkipVerify {
		return nil, nil
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return nil, fmt.Errorf("%w: --kafka-tls-cert %q and --kafka-tls-key %q: give both or neither", ErrConfig, f.TLSCert, f.TLSKey)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The operator asked for it by name; the flag's help says what it costs.
		InsecureSkipVerify: f.TLSInsecureSkipVerify, //nolint:gosec
	}
	if f.TLSCA != "" {
		pem, err := os.ReadFile(f.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("%w: --kafka-tls-ca %q: %w", ErrConfig, f.TLSCA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: --kafka-tls-ca %q: no PEM certificate in the file", ErrConfig, f.TLSCA)
		}
		cfg.RootCAs = pool
	}
	if f.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("%w: --kafka-tls-cert %q, --kafka-tls-key %q: %w", ErrConfig, f.TLSCert, f.TLSKey, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func (f *Flags) saslMechanism() (sasl.Mechanism, error) {
	mech := strings.ToLower(strings.TrimSpace(f.SASLMechanism))
	if mech == "" {
		if f.SASLUser != "" || f.SASLPassword != "" {
			return nil, fmt.Errorf("%w: --kafka-sasl-user and --kafka-sasl-password need --kafka-sasl-mechanism", ErrConfig)
		}
		return nil, nil
	}
	if f.SASLUser == "" || f.SASLPassword == "" {
		return nil, fmt.Errorf("%w: --kafka-sasl-mechanism %q needs --kafka-sasl-user and --kafka-sasl-password", ErrConfig, f.SASLMechanism)
	}
	auth := scram.Auth{User: f.SASLUser, Pass: f.SASLPassword}
	switch mech {
	case "plain":
		return plain.Mechanism{Username: f.SASLUser, Password: f.SASLPassword}, nil
	case "scram-sha-256":
		return franzSASL{auth.AsSha256Mechanism()}, nil
	case "scram-sha-512":
		return franzSASL{auth.AsSha512Mechanism()}, nil
	}
	return nil, fmt.Errorf("%w: --kafka-sasl-mechanism %q: want plain, scram-sha-256 or scram-sha-512", ErrConfig, f.SASLMechanism)
}

// franzSASL runs a franz-go SASL mechanism under kafka-go. kafka-go's own
// sasl/scram needs github.com/xdg-go/scram, a module this one does not
// require; franz-go's needs only the standard library and is already here.
// The two interfaces differ only in names: kafka-go sends the initial
// response, then feeds each server challenge to Next until it reports done,
// as franz-go does with Challenge.
type franzSASL struct{ m fsasl.Mechanism }

func (a franzSASL) Name() string { return a.m.Name() }

func (a franzSASL) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	host := ""
	if md := sasl.MetadataFromContext(ctx); md != nil {
		host = net.JoinHostPort(md.Host, strconv.Itoa(md.Port))
	}
	sess, first, err := a.m.Authenticate(ctx, host)
	if err != nil {
		return nil, nil, err
	}
	return franzSession{sess}, first, nil
}

type franzSession struct{ s fsasl.Session }

func (s franzSession) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	return s.s.Challenge(challenge)
}
