package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
)

// systemRun builds the real binaries and runs the whole system as
// processes (an etcd and a broker in this test process, two coordinators,
// three agents with ids 127.0.0.2-4, a shared and a local topic over files
// that rename-rotate every 4 s) with extra devstack flags, then returns
// the output and the totals of the check: every line must be in Kafka (by
// file and offset; a local file once per agent).
func systemRun(t *testing.T, extra ...string) (string, []string) {
	t.Helper()
	bin := buildBinaries(t, "logagent", "coordinator")
	// The working directory (process logs, etcd and Kafka data) is kept
	// when the test fails: it is what explains a failure.
	dir, err := os.MkdirTemp("", "logferry-"+t.Name()+"-")
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept the working directory with the process logs: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	args := append([]string{"--bin", bin, "--dir", dir, "--kafka-port", "0", "--view=true",
		"--rate", "400", "--rotate-every", "4s", "--check",
		// The whole suite runs in parallel on two cores: give the last
		// lines time to arrive before calling them lost.
		"--check-timeout", "150s"}, extra...)
	err = run(ctx, args, &stdout, &stderr)
	out := stdout.String()
	// The live view repaints the screen every second; log the faults and
	// the last view only.
	lastView := out
	if i := strings.LastIndex(out, "\033[H\033[2J"); i >= 0 {
		lastView = out[i:]
	}
	var faults []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "fault:") {
			faults = append(faults, l)
		}
	}
	t.Logf("ran %v; faults:\n%s\nlast view and totals:\n%s\n%s", time.Since(start).Round(time.Second),
		strings.Join(faults, "\n"), lastView, stderr.String())
	require.NoError(t, err)
	// The stop was clean: every process ended its last run by itself on
	// SIGTERM (a killed and restarted one logs its stop once, at the end).
	for _, name := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "coord-1", "coord-2"} {
		logs, err := os.ReadFile(filepath.Join(dir, "procs", name+".log"))
		require.NoError(t, err)
		stopped := "agent stopped"
		if strings.HasPrefix(name, "coord-") {
			stopped = "coordinator stopped"
		}
		require.Contains(t, string(logs), stopped, "%s stopped cleanly", name)
	}
	for _, want := range []string{"leader: coord-", "AGENT", "FILES OWNED", "LINES/S", "BYTES BEHIND", "127.0.0.2", "127.0.0.4", "lines to deliver"} {
		require.Contains(t, lastView, want, "the live view")
	}
	m := regexp.MustCompile(`lost (\d+), duplicated (\d+); kills (\d+), broker restarts (\d+), failovers (\d+), max failover [^;]+; ` +
		`files shipped by two agents at once (\d+); duplicates that differ from their original (\d+)`).FindStringSubmatch(out)
	require.NotNil(t, m, "no totals line")
	require.Equal(t, "0", m[1], "lines lost")
	require.Equal(t, "0", m[6], "files shipped by two agents at once")
	require.Equal(t, "0", m[7], "every duplicate is a copy of its original (same file, offset and line)")
	return out, m
}

// TestSystem runs the whole system as processes for 20 s with rotation,
// no faults: every line arrives exactly once. It points the dev stack at an
// etcd and a broker of its own, as `make demo` against external ones
// (TestSystemWithFaults uses the embedded ones).
func TestSystem(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs for half a minute")
	}
	e := testenv.StartEtcd(t)
	k := testenv.StartKafka(t)
	out, m := systemRun(t, "--duration", "20s", "--etcd-endpoints", e.Endpoint(), "--kafka-brokers", strings.Join(k.Brokers(), ","))
	require.Contains(t, out, fmt.Sprintf("etcd [%s], kafka %v", e.Endpoint(), k.Brokers()), "the external servers were used")
	require.Equal(t, "0", m[2], "no duplicates without faults")
}

// TestSystemWithFaults is TestSystem under faults every 3 s: kill -9 of an
// agent or a coordinator (the leader half the time; each restarted), stops
// and restarts of the broker, rotation storms. Every line arrives,
// duplicates only from the crashes, each a copy of its original, and no
// file of the shared topic shipped by two agents at once (judged from the
// records' host headers and times).
func TestSystemWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs for a minute under faults")
	}
	out, m := systemRun(t, "--duration", "40s", "--chaos-every", "3s", "--seed", "20261121")
	require.NotEqual(t, "0", m[3], "the run must have killed processes to test anything")
	require.NotEqual(t, "0", m[5], "the run must have failed over the leader")
	require.True(t, strings.Contains(out, "kill -9 coord-"), "a coordinator was killed")
	require.True(t, strings.Contains(out, "kill -9 127.0.0."), "an agent was killed")
	require.True(t, strings.Contains(out, "broker stopped and restarted"), "the broker was restarted")
}
