package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/logferry/logferry/internal/devstack"
)

// Certs are PEM files made for one test: a CA, a server certificate for
// 127.0.0.1 and localhost, and a client certificate, all signed by the CA.
type Certs struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// WriteCerts makes a CA and a server and a client certificate (ECDSA P-256,
// valid for an hour) in dir.
func WriteCerts(t testing.TB, dir string) Certs {
	t.Helper()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "logferry test CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("create CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("parse CA certificate: %v", err)
	}
	c := Certs{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, c.CA, "CERTIFICATE", caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, name string) (certFile, keyFile string) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("create %s certificate: %v", name, err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatalf("marshal %s key: %v", name, err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certFile, "CERTIFICATE", der)
		writePEM(t, keyFile, "EC PRIVATE KEY", kder)
		return certFile, keyFile
	}
	c.ServerCert, c.ServerKey = leaf(2, "localhost", x509.ExtKeyUsageServerAuth, "server")
	// The client certificate's CN names no etcd user: with client
	// certificate auth, etcd takes the CN as the user when a request has no
	// password token, and these tests authenticate by password.
	c.ClientCert, c.ClientKey = leaf(3, "logferry-test-client", x509.ExtKeyUsageClientAuth, "client")
	return c
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	return k
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// SecureEtcd is an etcd server that requires TLS with a client certificate
// and, once auth is enabled, a user and password.
type SecureEtcd struct {
	*Etcd
	Certs Certs
	// RootPassword is the password of the root user.
	RootPassword string
}

// StartSecureEtcd starts a one-member etcd that serves clients over TLS
// only, requires a client certificate, and has auth enabled with a root user
// (password RootPassword).
func StartSecureEtcd(t testing.TB) *SecureEtcd {
	t.Helper()
	certs := WriteCerts(t, t.TempDir())
	e, err := devstack.StartEtcd(devstack.EtcdOptions{Dir: t.TempDir(), Fast: true, ClientTLS: transport.TLSInfo{
		CertFile: certs.ServerCert, KeyFile: certs.ServerKey, TrustedCAFile: certs.CA, ClientCertAuth: true,
	}})
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	s := &SecureEtcd{Etcd: &Etcd{Etcd: e, t: t}, Certs: certs, RootPassword: "root-secret-" + rand.Text()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := s.ClientAs("", "")
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", s.RootPassword); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable etcd auth: %v", err)
		}
	}
	return s
}

// ClientAs returns a TLS client that authenticates as user (none when
// empty), closed when the test ends (before the server).
func (s *SecureEtcd) ClientAs(user, password string) *clientv3.Client {
	s.t.Helper()
	tlsCfg, err := transport.TLSInfo{CertFile: s.Certs.ClientCert, KeyFile: s.Certs.ClientKey, TrustedCAFile: s.Certs.CA}.ClientConfig()
	if err != nil {
		s.t.Fatalf("etcd client TLS: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: s.Endpoints(), DialTimeout: 5 * time.Second, TLS: tlsCfg,
		Username: user, Password: password, Logger: zap.NewNop(),
	})
	if err != nil {
		s.t.Fatalf("etcd client as %q: %v", user, err)
	}
	s.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Root returns a client authenticated as the root user.
func (s *SecureEtcd) Root() *clientv3.Client { return s.ClientAs("root", s.RootPassword) }

// AddUser creates user with password and grants it roles, as root.
func (s *SecureEtcd) AddUser(user, password string, roles ...string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	root := s.Root()
	if _, err := root.UserAdd(ctx, user, password); err != nil {
		s.t.Fatalf("add etcd user %s: %v", user, err)
	}
	for _, r := range roles {
		if _, err := root.UserGrantRole(ctx, user, r); err != nil {
			s.t.Fatalf("grant role %s to %s: %v", r, user, err)
		}
	}
}

// ClientFlags are the etcd flags that connect a logferry binary to this
// server as user.
func (s *SecureEtcd) ClientFlags(user string) []string {
	return []string{"--etcd-endpoints", s.Endpoint(), "--etcd-ca", s.Certs.CA,
		"--etcd-cert", s.Certs.ClientCert, "--etcd-key", s.Certs.ClientKey, "--etcd-user", user}
}
