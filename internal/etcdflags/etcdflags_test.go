package etcdflags

import (
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func parse(t *testing.T, args ...string) *Flags {
	t.Helper()
	var f Flags
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	f.Register(fs)
	require.NoError(t, fs.Parse(args))
	return &f
}

func TestClientConfig(t *testing.T) {
	cfg, err := parse(t, "--etcd-endpoints", "a:1, b:2", "--etcd-user", "u", "--etcd-password", "p").ClientConfig()
	require.NoError(t, err)
	require.Equal(t, []string{"a:1", "b:2"}, cfg.Endpoints)
	require.Equal(t, "u", cfg.Username)
	require.Nil(t, cfg.TLS)
}

func TestClientConfigErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--etcd-endpoints", " "}, "--etcd-endpoints"},
		{[]string{"--etcd-cert", "/c.pem"}, "--etcd-key"},
		{[]string{"--etcd-password", "p"}, "--etcd-user"},
		{[]string{"--etcd-ca", "/no/such/ca.pem"}, "/no/such/ca.pem"},
	} {
		_, err := parse(t, tc.args...).ClientConfig()
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}

func TestSpace(t *testing.T) {
	ks, err := parse(t, "--etcd-prefix", "/prod").Space()
	require.NoError(t, err)
	require.Equal(t, "/prod/topics/x", ks.Topic("x"))
	_, err = parse(t, "--etcd-prefix", "prod").Space()
	require.ErrorContains(t, err, "--etcd-prefix")
}
