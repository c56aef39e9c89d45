package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
)

func putV(t *testing.T, cli *clientv3.Client, key string, data []byte) {
	t.Helper()
	_, err := cli.Put(context.Background(), key, string(data))
	require.NoError(t, err)
}

// must unwraps an encoding that cannot fail for the fixed values here.
func must(data []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return data
}

// seed writes a small cluster's state: a leader, two agents on two topics
// (one invalid), assignments (one revoking), checkpoints and problems.
func seed(t *testing.T, cli *clientv3.Client) {
	now := time.Now().UTC()
	_, err := cli.Put(context.Background(), "/coordinator/election/694d1", "coord-a")
	require.NoError(t, err)
	_, err = cli.Put(context.Background(), "/coordinator/election/694d2", "coord-b")
	require.NoError(t, err)
	putV(t, cli, "/status/coordinator", must(protocol.Marshal(&protocol.CoordinatorStatus{Leader: "coord-a", LastReconcile: now, Members: 2, Files: 3, Assignments: 3, PendingHandovers: 1})))
	_, err = cli.Put(context.Background(), "/topics/web", `{"paths":["/var/log/web/*.log"],"shared":true}`)
	require.NoError(t, err)
	_, err = cli.Put(context.Background(), "/topics/broken", `{"paths":["relative"]}`)
	require.NoError(t, err)
	for _, a := range []string{"10.0.0.1", "10.0.0.2"} {
		putV(t, cli, "/topics/web/"+a, must(protocol.Marshal(&protocol.Heartbeat{Agent: a, Version: "v1", Started: now, Files: []protocol.SeenFile{
			{Key: "f1", Path: "/var/log/web/a.log"}, {Key: "f2", Path: "/var/log/web/b.log"}, {Key: "f3", Path: "/var/log/web/c.log"}}})))
	}
	putV(t, cli, "/assign/10.0.0.1/web/f1", must(protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/var/log/web/a.log"})))
	putV(t, cli, "/assign/10.0.0.2/web/f2", must(protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/var/log/web/b.log"})))
	putV(t, cli, "/assign/10.0.0.1/web/f3", must(protocol.Marshal(&protocol.Assignment{State: protocol.StateRevoking, Path: "/var/log/web/c.log", Revoking: "10.0.0.2"})))
	putV(t, cli, "/offsets/web/f1", must(protocol.Marshal(&protocol.Checkpoint{Offset: 100, Size: 150, Path: "/var/log/web/a.log", Agent: "10.0.0.1", Updated: now})))
	putV(t, cli, "/offsets/web/f2", must(protocol.Marshal(&protocol.Checkpoint{Offset: 70, Size: 70, Path: "/var/log/web/b.log", Agent: "10.0.0.2", Updated: now})))
	putV(t, cli, "/offsets/web/old", must(protocol.Marshal(&protocol.Checkpoint{Offset: 10, Size: 30, Path: "/var/log/web/old.log", Agent: "10.0.0.2", Updated: now})))
	putV(t, cli, "/status/agents/10.0.0.2", must(protocol.Marshal(&protocol.AgentStatus{Agent: "10.0.0.2", LostBytes: 42,
		Problems: []protocol.Problem{{Topic: "x", Kind: "topic-refused", Error: "outside /var/log"}}})))
	_, err = cli.Put(context.Background(), "/assign/junk", "x")
	require.NoError(t, err)
}

func TestStatusViews(t *testing.T) {
	e := testenv.StartEtcd(t)
	seed(t, e.Client())
	ep := "--etcd-endpoints=" + e.Endpoint()

	r := logctl("status", ep)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "leader: coord-a")
	require.Regexp(t, `10\.0\.0\.1 +v1 +web +3 +2 +0 +0`, r.stdout)
	require.Regexp(t, `10\.0\.0\.2 +v1 +web +3 +1 +1 +42`, r.stdout)
	require.Regexp(t, `broken +invalid .*paths\[0\]: "relative"`, r.stdout)
	require.Regexp(t, `web +ok +true +2 +3 +2 +1`, r.stdout)
	require.Contains(t, r.stdout, "/assign/junk")

	r = logctl("status", ep, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var st struct {
		Leader string
		Agents []agentRow
		Topics []topicRow
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	require.Equal(t, "coord-a", st.Leader)
	require.Len(t, st.Agents, 2)
	require.Len(t, st.Topics, 2)

	r = logctl("agents", ep)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "10.0.0.2: topic-refused x : outside /var/log")

	r = logctl("assignments", ep, "--topic", "web")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `web +10\.0\.0\.1 +revoking -> 10\.0\.0\.2 +/var/log/web/c\.log`, r.stdout)
	r = logctl("assignments", ep, "--topic", "nope", "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "[]\n", r.stdout)

	r = logctl("lag", ep, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var lag []lagRow
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &lag))
	byPath := map[string]lagRow{}
	for _, l := range lag {
		byPath[l.Path] = l
	}
	require.Equal(t, int64(50), byPath["/var/log/web/a.log"].Behind)
	require.Equal(t, "10.0.0.1", byPath["/var/log/web/a.log"].Owner)
	require.Equal(t, int64(0), byPath["/var/log/web/b.log"].Behind)
	require.Equal(t, "-", byPath["/var/log/web/old.log"].Owner, "checkpointed files nobody holds are listed too")
	r = logctl("lag", ep)
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `total +70`, r.stdout)
}

func TestStatusWithNothingRunning(t *testing.T) {
	e := testenv.StartEtcd(t)
	r := logctl("status", "--etcd-endpoints="+e.Endpoint())
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "leader: none")
}
