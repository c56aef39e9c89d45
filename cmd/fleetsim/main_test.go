package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/pkg/keyspace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestAllScenariosSmallFleet runs every scenario against the real
// coordinator binary with 20 agents x 5 files: run fails (and so does the
// test) when a scenario does not settle or the failover moved anything.
func TestAllScenariosSmallFleet(t *testing.T) {
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(bin, "coordinator"), "../coordinator")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build coordinator: %s", out)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err = run(ctx, []string{"--bin", bin, "--dir", dir, "--agents", "20", "--files", "5",
		"--duration", "2s", "--coordinator-lease-ttl", "1s", "--lease-ttl", "2s",
		"--converge-timeout", "30s", "--sample-interval", "100ms", "--checkpoint-interval", "200ms"}, &stdout, &stderr)
	report := stdout.String()
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", report, stderr.String())
	for _, sc := range allScenarios {
		require.Contains(t, report, "== "+sc+" (20 agents x 5 files) ==")
	}
	require.Regexp(t, regexp.MustCompile(`assignments moved by the failover\s+0 `), report)
	require.Regexp(t, regexp.MustCompile(`agent leases lost\s+0\n`), report)
	require.NotContains(t, report, "FAILED")
	t.Log(report)
}

func TestFileKeysAreValidAndDecode(t *testing.T) {
	for _, tc := range []struct {
		agent int
		r     fileRef
	}{{0, fileRef{idx: 0}}, {9999, fileRef{idx: 99}}, {3, fileRef{shared: true, idx: 123456}}} {
		key := fileKey(tc.agent, tc.r)
		require.NoError(t, keyspace.ValidateFileKey(key))
		agent, r, ok := parseFileKey(key)
		require.True(t, ok, key)
		require.Equal(t, tc.r, r, key)
		if !r.shared {
			require.Equal(t, tc.agent, agent, key)
		}
		require.NoError(t, keyspace.ValidateAgent(agentID(tc.agent)))
	}
	_, _, ok := parseFileKey("0123")
	require.False(t, ok)
}

func TestMovedCountsGoneAndRecreatedKeys(t *testing.T) {
	before := map[string]int64{"a/1": 10, "a/2": 11, "b/3": 12}
	require.Equal(t, 0, moved(before, map[string]int64{"a/1": 10, "a/2": 11, "b/3": 12, "c/4": 20}))
	require.Equal(t, 2, moved(before, map[string]int64{"a/1": 10, "a/2": 30}))
}

func TestFlagErrorsNameTheValue(t *testing.T) {
	bin := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "coordinator"), nil, 0o755))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bin", t.TempDir()}, "coordinator not found"},
		{[]string{"--bin", bin, "--scenarios", "cold-local,nap"}, `unknown scenario "nap"`},
		{[]string{"--bin", bin, "--agents", "0"}, "--agents 0"},
		{[]string{"--bin", bin, "--checkpoint-batch", "200"}, "--checkpoint-batch 200"},
		{[]string{"--bin", bin, "--coordinator-lease-ttl", "1500ms"}, "--coordinator-lease-ttl 1.5s"},
	} {
		_, err := parse(tc.args, io.Discard)
		require.ErrorContains(t, err, tc.want, "%v", tc.args)
	}
}
