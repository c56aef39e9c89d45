// Package devstack starts the coordination and data planes in-process: a
// single-member etcd server (go.etcd.io/etcd/server/v3/embed) and a
// Kafka-protocol broker (github.com/twmb/franz-go/pkg/kfake). Tests use it
// through internal/testenv; the demo stack uses it directly. Production
// binaries never import it.
//
// Invariants: a started server is ready to serve when Start returns; Close
// is safe to call more than once (embed.Etcd.Close panics on a second call).
package devstack

import (
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdOptions configures StartEtcd.
type EtcdOptions struct {
	// Dir holds the member's data. Required.
	Dir string
	// ClientURL is where clients connect; default http://127.0.0.1:0 (a free port).
	ClientURL string
	// PeerURL is the member's peer address; default http://127.0.0.1:0.
	PeerURL string
	// Fast uses 10 ms ticks so the member is leader within ~100 ms, and
	// bcrypt's lowest cost for passwords: at the default cost, every
	// authentication takes seconds in a race-detector build on a loaded
	// machine, longer than the clients' dial timeout.
	Fast bool
	// Logger, when nil, discards etcd's own logs.
	Logger *zap.Logger
	// ClientTLS, when its CertFile is set, serves clients over TLS (the
	// default ClientURL becomes https://127.0.0.1:0); with ClientCertAuth
	// set, clients must present a certificate signed by TrustedCAFile.
	ClientTLS transport.TLSInfo
}

// Etcd is a running single-member etcd server.
type Etcd struct {
	srv       *embed.Etcd
	closeOnce sync.Once
}

// StartEtcd starts a one-member etcd and waits until it serves.
func StartEtcd(o EtcdOptions) (*Etcd, error) {
	if o.Dir == "" {
		return nil, fmt.Errorf("devstack: etcd data dir is required")
	}
	cfg := embed.NewConfig()
	cfg.Dir = o.Dir
	cfg.Name = "devstack"
	scheme := "http"
	if o.ClientTLS.CertFile != "" {
		scheme = "https"
		cfg.ClientTLSInfo = o.ClientTLS
	}
	curl, err := url.Parse(defaultString(o.ClientURL, scheme+"://127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("devstack: client url %q: %w", o.ClientURL, err)
	}
	purl, err := url.Parse(defaultString(o.PeerURL, "http://127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("devstack: peer url %q: %w", o.PeerURL, err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*curl}, []url.URL{*curl}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*purl}, []url.URL{*purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if o.Fast {
		cfg.TickMs, cfg.ElectionMs = 10, 100
		cfg.BcryptCost = 4 // bcrypt.MinCost
	}
	logger := o.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(logger)
	srv, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("devstack: start etcd in %s: %w", o.Dir, err)
	}
	select {
	case <-srv.Server.ReadyNotify():
	case err := <-srv.Err():
		srv.Close()
		return nil, fmt.Errorf("devstack: etcd failed while starting: %w", err)
	case <-time.After(30 * time.Second):
		srv.Server.Stop()
		srv.Close()
		return nil, fmt.Errorf("devstack: etcd in %s not ready after 30s", o.Dir)
	}
	return &Etcd{srv: srv}, nil
}

// Endpoint is the client address, host:port.
func (e *Etcd) Endpoint() string { return e.srv.Clients[0].Addr().String() }

// Server is the embedded server, for fault injection in tests.
func (e *Etcd) Server() *embed.Etcd { return e.srv }

// Err reports a fatal server error.
func (e *Etcd) Err() <-chan error { return e.srv.Err() }

// Close stops the server. Close every client first: with live watch or
// lease streams Close takes several seconds.
func (e *Etcd) Close() { e.closeOnce.Do(e.srv.Close) }

// KafkaOptions configures StartKafka.
type KafkaOptions struct {
	// Port, when set, is the port to listen on (the demo uses 9092);
	// default a free port.
	Port int
	// DataDir, when set, persists the log so a restarted broker keeps it.
	DataDir string
	// Partitions of auto-created topics (default 3).
	Partitions int
	// Extra options appended last.
	Extra []kfake.Opt
}

// StartKafka starts an in-process Kafka-protocol broker.
func StartKafka(o KafkaOptions) (*kfake.Cluster, error) {
	parts := o.Partitions
	if parts == 0 {
		parts = 3
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(parts),
		kfake.AllowAutoTopicCreation(),
	}
	if o.Port != 0 {
		opts = append(opts, kfake.Ports(o.Port))
	}
	if o.DataDir != "" {
		opts = append(opts, kfake.DataDir(o.DataDir), kfake.SyncWrites())
	}
	opts = append(opts, o.Extra...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return nil, fmt.Errorf("devstack: start kafka broker: %w", err)
	}
	return c, nil
}

func defaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
