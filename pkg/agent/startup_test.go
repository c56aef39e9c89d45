package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

// readRecorder wraps a client's KV and records every read under a prefix:
// the key, and whether it was a range (a prefix or a span of keys).
type readRecorder struct {
	clientv3.KV
	prefix string
	mu     sync.Mutex
	reads  []string // "key" or "key..." for a range
}

func recordReads(cli *clientv3.Client, prefix string) *readRecorder {
	r := &readRecorder{KV: cli.KV, prefix: prefix}
	cli.KV = r
	return r
}

func (r *readRecorder) note(op clientv3.Op) {
	if !op.IsGet() || !strings.HasPrefix(string(op.KeyBytes()), r.prefix) {
		return
	}
	k := string(op.KeyBytes())
	if len(op.RangeBytes()) > 0 {
		k += "..."
	}
	r.mu.Lock()
	r.reads = append(r.reads, k)
	r.mu.Unlock()
}

func (r *readRecorder) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	r.note(clientv3.OpGet(key, opts...))
	return r.KV.Get(ctx, key, opts...)
}

func (r *readRecorder) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	r.note(op)
	return r.KV.Do(ctx, op)
}

func (r *readRecorder) Txn(ctx context.Context) clientv3.Txn {
	return &recordedTxn{Txn: r.KV.Txn(ctx), r: r}
}

func (r *readRecorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reads
	r.reads = nil
	return out
}

type recordedTxn struct {
	clientv3.Txn
	r *readRecorder
}

func (t *recordedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *recordedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.r.note(op)
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *recordedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.r.note(op)
	}
	t.Txn = t.Txn.Else(ops...)
	return t
}

func withStateDir(dir string) agentOpt {
	return func(c *Config, _ *ship.Config) { c.StateDir = dir }
}

// TestStartupReadsOnlyItsOwnCheckpoints: on a local topic, a restarted
// agent finds the file rotated out of the globs while it was down (its
// assignment gone meanwhile) from its state file, and reads no checkpoint
// but those of its own files: not the topic's, not the other hosts',
// not those of its own files rotated away long ago.
func TestStartupReadsOnlyItsOwnCheckpoints(t *testing.T) {
	e := newEnv(t)
	state := t.TempDir()
	e.write("app.log", header("gen1"))
	e.writeLines("app.log", 0, 100)
	e.putTopic("app", topics.Config{Paths: []string{e.dir + "/app.log"}})
	ag := e.startAgent("h1", withStateDir(state))
	old := e.waitSeen("app", "h1", "app.log")
	key := e.assign("app", "h1", old)
	e.waitRecords("app", 101, 20*time.Second)
	require.NoError(t, ag.stop())

	// The history of a busy topic: other hosts' checkpoints, and this
	// host's own of files rotated away and deleted long ago.
	for i := range 300 {
		agent, path := fmt.Sprintf("10.0.%d.%d", i/250, i%250), fmt.Sprintf("/var/log/app-%d.log", i)
		if i%3 == 0 {
			agent, path = "h1", e.path(fmt.Sprintf("app.log.%d", 100+i))
		}
		raw, err := protocol.Marshal(&protocol.Checkpoint{Offset: 100, Size: 100, Path: path, Agent: agent,
			Identity: protocol.FileIdentity{Fingerprint: fmt.Sprintf("fp%d", i), Inode: uint64(1000 + i)}})
		require.NoError(t, err)
		_, err = e.cli.Put(context.Background(), e.ks.Offset("app", fmt.Sprintf("history%04d", i)), string(raw))
		require.NoError(t, err)
	}

	e.writeLines("app.log", 100, 150)
	require.NoError(t, renameFile(e.path("app.log"), e.path("app.log.1")))
	e.write("app.log", header("gen2"))
	_, err := e.cli.Delete(context.Background(), key)
	require.NoError(t, err)

	reads := recordReads(e.cli, e.ks.OffsetsPrefix())
	e.startAgent("h1", withStateDir(state))
	testenv.WaitFor(t, 10*time.Second, "the rotated, unfinished file in the heartbeat, where it is now", func() bool {
		f, _, ok := e.listing("app", old.Key, "h1")
		return ok && f.Path == e.path("app.log.1")
	})
	cur := e.waitSeen("app", "h1", "app.log")
	e.assign("app", "h1", old)
	e.assign("app", "h1", cur)
	recs := e.waitRecords("app", 152, 20*time.Second)
	requireEachOnce(t, recs, 152, "the rotated file's tail and the new file, nothing lost")

	own := map[string]bool{e.ks.Offset("app", old.Key): true, e.ks.Offset("app", cur.Key): true}
	got := reads.take()
	require.NotEmpty(t, got, "the recorder saw the agent's reads")
	for _, k := range got {
		require.True(t, own[k], "start-up read %s: only this agent's current files' checkpoints may be read (all reads: %v)", k, got)
	}
}
