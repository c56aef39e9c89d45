// Package etcdflags holds the etcd connection flags every logferry binary
// shares (--etcd-endpoints, --etcd-prefix, TLS and auth) and turns them into
// a client and a key space.
package etcdflags

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/logferry/logferry/pkg/keyspace"
)

// Flags are the etcd connection settings.
type Flags struct {
	Endpoints   []string
	Prefix      string
	DialTimeout time.Duration
	CA          string
	Cert        string
	Key         string
	User        string
	Password    string
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringSliceVar(&f.Endpoints, "etcd-endpoints", []string{"127.0.0.1:2379"}, "etcd endpoints, comma-separated or repeated (host:port or URL)")
	fs.StringVar(&f.Prefix, "etcd-prefix", "", `root prefix of every logferry key, such as "/prod" (default none)`)
	fs.DurationVar(&f.DialTimeout, "etcd-dial-timeout", 5*time.Second, "how long to wait for the first etcd connection")
	fs.StringVar(&f.CA, "etcd-ca", "", "CA bundle (PEM) to verify etcd's server certificate; enables TLS")
	fs.StringVar(&f.Cert, "etcd-cert", "", "client certificate (PEM) for etcd; enables TLS, needs --etcd-key")
	fs.StringVar(&f.Key, "etcd-key", "", "client private key (PEM) for --etcd-cert")
	fs.StringVar(&f.User, "etcd-user", "", "etcd user name (role-based auth)")
	fs.StringVar(&f.Password, "etcd-password", "", "etcd password for --etcd-user; prefer the environment variable to the flag")
}

// Space is the key space under --etcd-prefix.
func (f *Flags) Space() (keyspace.Space, error) {
	ks, err := keyspace.New(f.Prefix)
	if err != nil {
		return keyspace.Space{}, fmt.Errorf("--etcd-prefix: %w", err)
	}
	return ks, nil
}

// ClientConfig checks the flags and returns the client configuration.
func (f *Flags) ClientConfig() (clientv3.Config, error) {
	var eps []string
	for _, e := range f.Endpoints {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if len(eps) == 0 {
		return clientv3.Config{}, fmt.Errorf("--etcd-endpoints: at least one endpoint is required")
	}
	if (f.Cert == "") != (f.Key == "") {
		return clientv3.Config{}, fmt.Errorf("--etcd-cert %q and --etcd-key %q: give both or neither", f.Cert, f.Key)
	}
	if f.Password != "" && f.User == "" {
		return clientv3.Config{}, fmt.Errorf("--etcd-password needs --etcd-user")
	}
	cfg := clientv3.Config{
		Endpoints:   eps,
		DialTimeout: f.DialTimeout,
		Username:    f.User,
		Password:    f.Password,
		Logger:      zap.NewNop(),
		// Keepalives make a dead member noticed in seconds, not minutes.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}
	if f.CA != "" || f.Cert != "" {
		info := transport.TLSInfo{CertFile: f.Cert, KeyFile: f.Key, TrustedCAFile: f.CA}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd TLS (--etcd-ca %q, --etcd-cert %q): %w", f.CA, f.Cert, err)
		}
		cfg.TLS = tlsCfg
	}
	return cfg, nil
}

// Connect returns a client. clientv3.New does not wait for a connection,
// so callers learn of an unreachable cluster from their first request.
func (f *Flags) Connect() (*clientv3.Client, error) {
	cfg, err := f.ClientConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %v: %w", cfg.Endpoints, err)
	}
	return cli, nil
}
