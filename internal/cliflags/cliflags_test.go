package cliflags

import (
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

func TestEnvFillsUnsetFlagsOnly(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	endpoints := fs.StringSlice("etcd-endpoints", []string{"127.0.0.1:2379"}, "etcd endpoints")
	id := fs.String("id", "", "agent id")
	ttl := fs.Duration("lease-ttl", 0, "lease ttl")
	DocumentEnv(fs, "LOGAGENT")
	require.Contains(t, fs.Lookup("etcd-endpoints").Usage, "(env LOGAGENT_ETCD_ENDPOINTS)")
	require.NoError(t, fs.Parse([]string{"--id", "from-flag"}))
	env := map[string]string{
		"LOGAGENT_ETCD_ENDPOINTS": "a:1,b:2",
		"LOGAGENT_ID":             "from-env",
		"LOGAGENT_LEASE_TTL":      "7s",
	}
	require.NoError(t, applyEnv(fs, "LOGAGENT", func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	require.Equal(t, []string{"a:1", "b:2"}, *endpoints)
	require.Equal(t, "from-flag", *id, "the command line wins")
	require.Equal(t, "7s", ttl.String())
}

func TestEnvBadValueNamesVariable(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.Duration("lease-ttl", 0, "lease ttl")
	require.NoError(t, fs.Parse(nil))
	err := applyEnv(fs, "LOGAGENT", func(k string) (string, bool) { return "ten", k == "LOGAGENT_LEASE_TTL" })
	require.ErrorContains(t, err, `LOGAGENT_LEASE_TTL="ten"`)
}
