package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/topics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type result struct {
	code           int
	stdout, stderr string
}

func logctl(args ...string) result {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

func TestTopicPutGetListRm(t *testing.T) {
	e := testenv.StartEtcd(t)
	ep := "--etcd-endpoints=" + e.Endpoint()

	r := logctl("topic", "put", "nginx", ep, "--path", "/var/log/nginx/*.log", "--path", "/var/log/nginx/**/x.log",
		"--exclude", "*.gz", "--shared", "--kafka-topic", "web", "--ignore-older", "24h",
		"--multiline-pattern", `^\s`, "--multiline-max-lines", "20")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "/topics/nginx")

	r = logctl("topic", "get", "nginx", ep)
	require.Equal(t, 0, r.code, r.stderr)
	got, err := topics.Decode("nginx", []byte(r.stdout))
	require.NoError(t, err, r.stdout)
	require.Equal(t, []string{"/var/log/nginx/*.log", "/var/log/nginx/**/x.log"}, got.Paths)
	require.Equal(t, []string{"*.gz"}, got.Exclude)
	require.True(t, got.Shared)
	require.Equal(t, "web", got.KafkaTopic)
	require.Equal(t, "24h0m0s", got.IgnoreOlder.Std().String())
	require.Equal(t, 20, got.Multiline.MaxLines)

	// A config written with plain etcdctl is listed with its error.
	cli := e.Client()
	_, err = cli.Put(context.Background(), "/topics/broken", `{"paths":["relative"]}`)
	require.NoError(t, err)

	r = logctl("topic", "list", ep)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "nginx")
	require.Contains(t, r.stdout, "web")
	require.Regexp(t, `broken .*paths\[0\]: "relative": must be an absolute path`, r.stdout)

	r = logctl("topic", "list", ep, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var listed struct {
		Topics []struct {
			Name   string
			Config *topics.Config
			Error  string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed))
	require.Len(t, listed.Topics, 2)

	r = logctl("topic", "rm", "nginx", ep)
	require.Equal(t, 0, r.code, r.stderr)
	r = logctl("topic", "get", "nginx", ep)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "no such topic")
	r = logctl("topic", "rm", "nginx", ep)
	require.Equal(t, 1, r.code)
}

func TestTopicPutDryRunWritesNothing(t *testing.T) {
	e := testenv.StartEtcd(t)
	r := logctl("topic", "put", "app", "--etcd-endpoints", e.Endpoint(), "--path", "/var/log/app.log", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
	cfg, err := topics.Decode("app", []byte(r.stdout))
	require.NoError(t, err, "dry-run must print the JSON that put would write")
	require.Equal(t, "app", cfg.KafkaTopic)
	resp, err := e.Client().Get(context.Background(), "/topics/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
	// No etcd is needed for a dry run.
	r = logctl("topic", "put", "app", "--etcd-endpoints", "127.0.0.1:1", "--path", "/var/log/app.log", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
}

func TestTopicPutRejectsBadConfigNamingTheField(t *testing.T) {
	e := testenv.StartEtcd(t)
	ep := "--etcd-endpoints=" + e.Endpoint()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--path", "var/log/x"}, `paths[0]: "var/log/x": must be an absolute path`},
		{[]string{}, "paths: at least one path glob is required"},
		{[]string{"--path", "/x", "--key", "line"}, `key: "line"`},
		{[]string{"--path", "/x", "--max-line-bytes", "5"}, "max_line_bytes: 5"},
		{[]string{"--path", "/x", "--multiline-pattern", "(["}, `multiline.pattern: "(["`},
	} {
		r := logctl(append([]string{"topic", "put", "t", ep}, tc.args...)...)
		require.Equal(t, 1, r.code, "%v: %s", tc.args, r.stdout)
		require.Contains(t, r.stderr, tc.want)
	}
	r := logctl("topic", "put", "t", ep, "--path", "/x", "--multiline-negate")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "--multiline-pattern")
	resp, err := e.Client().Get(context.Background(), "/topics/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs)
}

func TestEnvironmentAndPrefix(t *testing.T) {
	e := testenv.StartEtcd(t)
	t.Setenv("LOGCTL_ETCD_ENDPOINTS", e.Endpoint())
	t.Setenv("LOGCTL_ETCD_PREFIX", "/prod")
	r := logctl("topic", "put", "a", "--path", "/var/log/a")
	require.Equal(t, 0, r.code, r.stderr)
	resp, err := e.Client().Get(context.Background(), "/prod/topics/a")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"topic", "put"},
		{"topic", "get", "a", "b"},
		{"topic", "list", "--no-such-flag"},
		{"topic", "list", "-o", "yaml", "--etcd-endpoints", "127.0.0.1:1"},
		{"topic", "list", "--etcd-prefix", "noslash"},
	} {
		r := logctl(args...)
		require.Equal(t, 2, r.code, "%v: %s", args, r.stderr)
	}
}

func TestHelpShowsEnvironmentVariables(t *testing.T) {
	r := logctl("topic", "put", "--help")
	require.Equal(t, 0, r.code)
	for _, want := range []string{"LOGCTL_ETCD_ENDPOINTS", "LOGCTL_PATH", "LOGCTL_DRY_RUN", "--kafka-topic"} {
		require.True(t, strings.Contains(r.stdout, want), "help lacks %s:\n%s", want, r.stdout)
	}
}
