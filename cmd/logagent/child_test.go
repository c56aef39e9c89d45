package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

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
