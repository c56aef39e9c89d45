package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
)

// buildAgent builds this package's binary for tests that run it as a
// child process.
func buildAgent(tb testing.TB) string {
	tb.Helper()
	bin := filepath.Join(tb.TempDir(), "logagent")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build logagent: %v: %s", err, out)
	}
	return bin
}

// firstFile waits until agent reports a file for topic and returns it.
func firstFile(tb testing.TB, cli *clientv3.Client, ks keyspace.Space, topic, agent string) protocol.SeenFile {
	tb.Helper()
	var seen protocol.SeenFile
	testenv.WaitFor(tb, 30*time.Second, agent+"'s heartbeat for "+topic, func() bool {
		resp, err := cli.Get(context.Background(), ks.Heartbeat(topic, agent))
		if err != nil || len(resp.Kvs) == 0 {
			return false
		}
		var hb protocol.Heartbeat
		if protocol.Unmarshal("heartbeat", resp.Kvs[0].Value, &hb) != nil || len(hb.Files) == 0 {
			return false
		}
		seen = hb.Files[0]
		return true
	})
	return seen
}

// assign plays the coordinator: it assigns file f of topic to agent.
func assign(tb testing.TB, cli *clientv3.Client, ks keyspace.Space, topic, agent string, f protocol.SeenFile) {
	tb.Helper()
	v, err := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: f.Path, Leader: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), ks.Assign(agent, topic, f.Key), string(v)); err != nil {
		tb.Fatal(err)
	}
}

// child is a running logagent binary.
type child struct {
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	listen string
	exited chan struct{}
	err    error
}

func startChild(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	c := &child{stderr: &testenv.Buffer{}, listen: testenv.FreeAddr(t), exited: make(chan struct{})}
	c.cmd = exec.Command(bin, append([]string{"--listen", c.listen}, args...)...)
	c.cmd.Stderr = c.stderr
	require.NoError(t, c.cmd.Start())
	go func() { c.err = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Kill() // also ends a stopped (SIGSTOP) process
			<-c.exited
		}
		if t.Failed() {
			t.Logf("%s %v:\n%s", bin, args, c.stderr.String())
		}
	})
	return c
}

// kill9 kills c with SIGKILL and waits for it.
func (c *child) kill9(t *testing.T) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.exited
}

// signal sends c sig (SIGSTOP, SIGCONT).
func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(sig))
}

// sigterm stops c and fails unless it exits cleanly within 10 s.
func (c *child) sigterm(t *testing.T) {
	t.Helper()
	start := time.Now()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-c.exited:
		require.NoError(t, c.err, "exit status 0 expected; stderr:\n%s", c.stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM; stderr:\n%s", c.stderr.String())
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
