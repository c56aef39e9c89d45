package ship

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func parseFlags(t *testing.T, args ...string) Config {
	t.Helper()
	cfg, err := configFromArgs(args...)
	require.NoError(t, err)
	return cfg
}

func configFromArgs(args ...string) (Config, error) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	var f Flags
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return f.Config()
}

// testCA writes a self-signed certificate for 127.0.0.1 to a file and
// returns the file and a server TLS config using it.
func testCA(t *testing.T) (string, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake test broker"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return caFile, &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

func TestFlagDefaults(t *testing.T) {
	cfg := parseFlags(t)
	want := DefaultConfig()
	require.Equal(t, want, cfg)
	require.Equal(t, AcksAll, cfg.Acks)
	require.Equal(t, kafka.Lz4, cfg.Compression)
	require.Nil(t, cfg.TLS)
	require.Nil(t, cfg.SASL)
}

func TestFlagsConfig(t *testing.T) {
	caFile, _ := testCA(t)
	dir := filepath.Dir(caFile)
	keyFile := filepath.Join(dir, "key.pem")
	junk := filepath.Join(dir, "junk.pem")
	require.NoError(t, os.WriteFile(junk, []byte("not a certificate"), 0o600))

	for _, tc := range []struct {
		name string
		args []string
		// wantErr lists substrings of the error (the flag and the value);
		// none means the flags are valid.
		wantErr []string
		check   func(t *testing.T, cfg Config)
	}{
		{name: "acks one", args: []string{"--kafka-acks", "one"},
			check: func(t *testing.T, cfg Config) { require.Equal(t, AcksLeader, cfg.Acks) }},
		{name: "acks -1", args: []string{"--kafka-acks", "-1"},
			check: func(t *testing.T, cfg Config) { require.Equal(t, AcksAll, cfg.Acks) }},
		{name: "bad acks", args: []string{"--kafka-acks", "two"}, wantErr: []string{"--kafka-acks", `"two"`}},
		{name: "compression zstd", args: []string{"--kafka-compression", "zstd"},
			check: func(t *testing.T, cfg Config) { require.Equal(t, kafka.Zstd, cfg.Compression) }},
		{name: "compression none", args: []string{"--kafka-compression", "none"},
			check: func(t *testing.T, cfg Config) { require.Zero(t, cfg.Compression) }},
		{name: "bad compression", args: []string{"--kafka-compression", "brotli"}, wantErr: []string{"--kafka-compression", `"brotli"`}},
		{name: "batch bytes at the topic limit", args: []string{"--kafka-batch-bytes", "1048588"},
			check: func(t *testing.T, cfg Config) { require.Equal(t, int64(MaxBatchBytes), cfg.BatchBytes) }},
		{name: "batch bytes above the topic limit", args: []string{"--kafka-batch-bytes", "1048589"},
			wantErr: []string{"--kafka-batch-bytes", "1048589", "max.message.bytes", "MESSAGE_TOO_LARGE"}},
		{name: "batch size zero", args: []string{"--kafka-batch-size", "0"}, wantErr: []string{"--kafka-batch-size", "0"}},
		{name: "negative linger", args: []string{"--kafka-linger", "-1s"}, wantErr: []string{"--kafka-linger", "-1s"}},
		{name: "no inflight bytes", args: []string{"--max-inflight-bytes", "0"}, wantErr: []string{"--max-inflight-bytes", "0"}},
		{name: "bad retry backoff", args: []string{"--kafka-retry-backoff-max", "0s"}, wantErr: []string{"--kafka-retry-backoff-max", "0s"}},
		{name: "fast retries", args: []string{"--kafka-retry-backoff-max", "10ms"},
			check: func(t *testing.T, cfg Config) { require.Equal(t, 10*time.Millisecond, cfg.RetryBackoffMin) }},
		{name: "no brokers", args: []string{"--kafka-brokers", " "}, wantErr: []string{"--kafka-brokers"}},
		{name: "broker without port", args: []string{"--kafka-brokers", "kafka-1"}, wantErr: []string{"--kafka-brokers", `"kafka-1"`}},
		{name: "several brokers", args: []string{"--kafka-brokers", "k1:9092,k2:9092", "--kafka-brokers", "k3:9093"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, []string{"k1:9092", "k2:9092", "k3:9093"}, cfg.Brokers)
			}},
		{name: "tls with system roots", args: []string{"--kafka-tls"},
			check: func(t *testing.T, cfg Config) { require.NotNil(t, cfg.TLS); require.Nil(t, cfg.TLS.RootCAs) }},
		{name: "tls ca", args: []string{"--kafka-tls-ca", caFile},
			check: func(t *testing.T, cfg Config) { require.NotNil(t, cfg.TLS.RootCAs) }},
		{name: "tls client cert", args: []string{"--kafka-tls-cert", caFile, "--kafka-tls-key", keyFile},
			check: func(t *testing.T, cfg Config) { require.Len(t, cfg.TLS.Certificates, 1) }},
		{name: "insecure implies tls", args: []string{"--kafka-tls-insecure-skip-verify"},
			check: func(t *testing.T, cfg Config) { require.True(t, cfg.TLS.InsecureSkipVerify) }},
		{name: "cert without key", args: []string{"--kafka-tls-cert", caFile}, wantErr: []string{"--kafka-tls-cert", "--kafka-tls-key", caFile}},
		{name: "key without cert", args: []string{"--kafka-tls-key", keyFile}, wantErr: []string{"--kafka-tls-key", keyFile}},
		{name: "missing ca file", args: []string{"--kafka-tls-ca", filepath.Join(dir, "nope.pem")}, wantErr: []string{"--kafka-tls-ca", "nope.pem"}},
		{name: "ca file without certificate", args: []string{"--kafka-tls-ca", junk}, wantErr: []string{"--kafka-tls-ca", "junk.pem", "no PEM"}},
		{name: "sasl plain", args: []string{"--kafka-sasl-mechanism", "plain", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
			check: func(t *testing.T, cfg Config) {
				require.Equal(t, plain.Mechanism{Username: "u", Password: "p"}, cfg.SASL)
			}},
		{name: "sasl scram-sha-512", args: []string{"--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
			check: func(t *testing.T, cfg Config) { require.Equal(t, "SCRAM-SHA-512", cfg.SASL.Name()) }},
		{name: "unknown sasl mechanism", args: []string{"--kafka-sasl-mechanism", "gssapi", "--kafka-sasl-user", "u", "--kafka-sasl-password", "p"},
			wantErr: []string{"--kafka-sasl-mechanism", `"gssapi"`}},
		{name: "sasl without user", args: []string{"--kafka-sasl-mechanism", "plain"}, wantErr: []string{"--kafka-sasl-mechanism", "--kafka-sasl-user"}},
		{name: "user without mechanism", args: []string{"--kafka-sasl-user", "u"}, wantErr: []string{"--kafka-sasl-user", "--kafka-sasl-mechanism"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := configFromArgs(tc.args...)
			if len(tc.wantErr) > 0 {
				require.ErrorIs(t, err, ErrConfig)
				for _, s := range tc.wantErr {
					require.ErrorContains(t, err, s)
				}
				return
			}
			require.NoError(t, err)
			if tc.check != nil {
				tc.check(t, cfg)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"default", func(*Config) {}, ""},
		{"acks out of range", func(c *Config) { c.Acks = 7 }, "--kafka-acks"},
		{"unknown codec", func(c *Config) { c.Compression = 42 }, "--kafka-compression"},
		{"batch bytes", func(c *Config) { c.BatchBytes = 16 << 20 }, "--kafka-batch-bytes 16777216"},
		{"batch size", func(c *Config) { c.BatchSize = 1 << 20 }, "--kafka-batch-size"},
		{"backoff", func(c *Config) { c.RetryBackoffMin = 0 }, "backoff"},
		{"write timeout", func(c *Config) { c.WriteTimeout = 0 }, "--kafka-write-timeout"},
		{"no brokers", func(c *Config) { c.Brokers = nil }, "--kafka-brokers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrConfig)
			require.ErrorContains(t, err, tc.wantErr)
			_, err = New(cfg, nil, nil)
			require.ErrorIs(t, err, ErrConfig, "New validates too")
		})
	}
}
