package mirror

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder applies batches to a map the way a consumer would and keeps the
// event log, so tests can compare it with etcd.
type recorder struct {
	mu      sync.Mutex
	state   map[string]string
	batches []Batch
	log     []string
}

func newRecorder() *recorder { return &recorder{state: map[string]string{}} }

func (r *recorder) handle(b Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, b)
	for _, ev := range b.Events {
		r.log = append(r.log, fmt.Sprintf("%s %s=%s", ev.Type, ev.KV.Key, ev.KV.Value))
		switch ev.Type {
		case Put:
			r.state[ev.KV.Key] = string(ev.KV.Value)
		case Delete:
			delete(r.state, ev.KV.Key)
		}
	}
	return nil
}

func (r *recorder) snapshot() (map[string]string, []string, []Batch) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := make(map[string]string, len(r.state))
	for k, v := range r.state {
		st[k] = v
	}
	return st, append([]string(nil), r.log...), append([]Batch(nil), r.batches...)
}

func etcdState(t *testing.T, cli *clientv3.Client, prefixes ...string) map[string]string {
	t.Helper()
	st := map[string]string{}
	for _, p := range prefixes {
		resp, err := cli.Get(context.Background(), p, clientv3.WithPrefix())
		require.NoError(t, err)
		for _, kv := range resp.Kvs {
			st[string(kv.Key)] = string(kv.Value)
		}
	}
	return st
}

func runMirror(t *testing.T, m *Mirror, r *recorder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, r.handle) }()
	return func() {
		cancel()
		require.NoError(t, <-done)
	}
}

func put(t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	_, err := cli.Put(context.Background(), k, v)
	require.NoError(t, err)
}

func del(t *testing.T, cli *clientv3.Client, k string) {
	t.Helper()
	_, err := cli.Delete(context.Background(), k)
	require.NoError(t, err)
}

func TestNewRejectsBadPrefixes(t *testing.T) {
	for _, ps := range [][]string{nil, {""}, {"/topics"}, {"/a/", "/a/b/"}} {
		_, err := New(nil, ps)
		require.ErrorIs(t, err, ErrBadPrefix, "%q", ps)
	}
}

func TestSnapshotThenChangesInOrder(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	put(t, cli, "/a/1", "x")
	put(t, cli, "/b/1", "y")
	put(t, cli, "/ab/1", "not mirrored") // shares a string prefix with /a/ but not the directory
	m, err := New(cli, []string{"/a/", "/b/"})
	require.NoError(t, err)
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()

	testenv.WaitFor(t, 5*time.Second, "snapshot", func() bool { _, _, b := r.snapshot(); return len(b) > 0 })
	_, _, batches := r.snapshot()
	require.True(t, batches[0].Snapshot)
	require.Len(t, batches[0].Events, 2)

	for i := range 20 {
		put(t, cli, "/a/k", fmt.Sprint(i))
	}
	del(t, cli, "/a/1")
	del(t, cli, "/a/never-existed")
	put(t, cli, "/b/2", "z")
	want := etcdState(t, cli, "/a/", "/b/")
	testenv.WaitFor(t, 5*time.Second, "mirror to match etcd", func() bool {
		st, _, _ := r.snapshot()
		return fmt.Sprint(st) == fmt.Sprint(want)
	})
	_, log, _ := r.snapshot()
	var seq []string
	for _, l := range log {
		if len(l) > 9 && l[:9] == "put /a/k=" {
			seq = append(seq, l[9:])
		}
	}
	require.Len(t, seq, 20)
	for i, v := range seq {
		require.Equal(t, fmt.Sprint(i), v, "changes of one key out of order")
	}
	require.Contains(t, log, "delete /a/1=x", "delete carries the last value")
	require.NotContains(t, fmt.Sprint(log), "/ab/1")
}

func TestCompactedWatchRelistsAndReportsDeletes(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	fw := testenv.InjectWatchFaults(cli)
	put(t, cli, "/topics/keep", "1")
	put(t, cli, "/topics/gone", "1")
	put(t, cli, "/topics/changed", "1")

	var resyncs []string
	var resyncMu sync.Mutex
	m, err := New(cli, []string{"/topics/"}, WithResyncHook(func(reason string) {
		resyncMu.Lock()
		resyncs = append(resyncs, reason)
		resyncMu.Unlock()
	}))
	require.NoError(t, err)
	// Hold the first watch back: the mirror has listed at revision R and
	// waits to watch from R+1, which the test compacts away.
	release := fw.Hold()
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "first watch call", func() bool { return fw.Calls() == 1 })

	del(t, cli, "/topics/gone")
	put(t, cli, "/topics/changed", "2")
	put(t, cli, "/topics/new", "1")
	e.CompactAll(cli)
	release()

	want := etcdState(t, cli, "/topics/")
	testenv.WaitFor(t, 5*time.Second, "mirror to re-list and match etcd", func() bool {
		st, _, _ := r.snapshot()
		return fmt.Sprint(st) == fmt.Sprint(want)
	})
	_, log, batches := r.snapshot()
	require.Len(t, batches, 2, "snapshot then one resync batch: %v", log)
	require.True(t, batches[1].Resync)
	require.Equal(t, []string{
		"put /topics/changed=1", "put /topics/gone=1", "put /topics/keep=1", // snapshot
		"put /topics/changed=2", "delete /topics/gone=1", "put /topics/new=1", // the difference only
	}, log)
	resyncMu.Lock()
	require.Len(t, resyncs, 1)
	require.Contains(t, resyncs[0], "compacted")
	resyncMu.Unlock()

	// After the re-list the mirror watches again from the new revision.
	put(t, cli, "/topics/after", "1")
	testenv.WaitFor(t, 5*time.Second, "change after the resync", func() bool {
		st, _, _ := r.snapshot()
		return st["/topics/after"] == "1"
	})
}

func TestClosedWatchRelistsWithoutDuplicates(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	fw := testenv.InjectWatchFaults(cli)
	m, err := New(cli, []string{"/x/"}, WithBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	for round := range 5 {
		put(t, cli, fmt.Sprintf("/x/%d", round), "v")
		testenv.WaitFor(t, 5*time.Second, "put to arrive", func() bool {
			st, _, _ := r.snapshot()
			return len(st) == round+1
		})
		calls := fw.Calls()
		fw.BreakAll()
		testenv.WaitFor(t, 5*time.Second, "re-watch", func() bool { return fw.Calls() > calls })
	}
	_, log, _ := r.snapshot()
	require.Len(t, log, 5, "each put reported exactly once across 5 broken watches: %v", log)
}

func TestHandlerErrorStopsRun(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	m, err := New(cli, []string{"/x/"})
	require.NoError(t, err)
	boom := errors.New("boom")
	err = m.Run(context.Background(), func(Batch) error { return boom })
	require.ErrorIs(t, err, boom)
}

// TestKeepHoldsOnlyTheKeysItAccepts: with WithKeep, keys it refuses are
// neither handed on nor held, in the first list, in watch events and in a
// re-list after a broken watch, in both modes.
func TestKeepHoldsOnlyTheKeysItAccepts(t *testing.T) {
	for _, stateless := range []bool{false, true} {
		t.Run(fmt.Sprint("stateless=", stateless), func(t *testing.T) {
			e := testenv.StartEtcd(t)
			cli := e.Client()
			faults := testenv.InjectWatchFaults(cli)
			put(t, cli, "/t/cfg", "config")
			put(t, cli, "/t/cfg/agent-1", "heartbeat")
			keep := func(k string) bool { return !strings.Contains(k, "/agent-") }
			opts := []Option{WithKeep(keep)}
			if stateless {
				opts = append(opts, WithoutState())
			}
			m, err := New(cli, []string{"/t/"}, opts...)
			require.NoError(t, err)
			r := newRecorder()
			stop := runMirror(t, m, r)
			testenv.WaitFor(t, 5*time.Second, "the first list", func() bool { st, _, _ := r.snapshot(); return len(st) == 1 })
			put(t, cli, "/t/cfg/agent-2", "heartbeat")
			put(t, cli, "/t/cfg2", "config")
			faults.BreakAll()
			put(t, cli, "/t/cfg/agent-3", "heartbeat")
			put(t, cli, "/t/cfg3", "config")
			testenv.WaitFor(t, 5*time.Second, "the configs only", func() bool {
				st, _, _ := r.snapshot()
				return len(st) == 3
			})
			st, log, _ := r.snapshot()
			require.Equal(t, map[string]string{"/t/cfg": "config", "/t/cfg2": "config", "/t/cfg3": "config"}, st)
			require.NotContains(t, fmt.Sprint(log), "agent-", "a refused key was handed on")
			stop()
			if !stateless {
				require.Len(t, m.state, 3, "refused keys held")
			}
		})
	}
}

// A progress request is answered once every prefix's watch has reported
// progress, and the answer comes after every change at or below its
// revision, under every prefix: a consumer can tell it has seen all of
// etcd up to a revision without listing. A watch held back (not yet
// opened) delays the answer rather than letting it through early.
func TestProgressCoversEveryChangeBelowIt(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	faults := testenv.InjectWatchFaults(cli)
	req := make(chan struct{}, 1)
	m, err := New(cli, []string{"/a/", "/b/"}, WithoutState(), WithProgressRequests(req), WithBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	r := newRecorder()
	release := faults.Hold()
	stop := runMirror(t, m, r)
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "the list, and the watches to be asked for", func() bool {
		_, _, bs := r.snapshot()
		return len(bs) > 0 && faults.Calls() > 0
	})

	// Changes the held watches have not delivered, then a request.
	var last int64
	for i := range 50 {
		for _, p := range []string{"/a/", "/b/"} {
			resp, err := cli.Put(context.Background(), fmt.Sprintf("%sk%02d", p, i), "v")
			require.NoError(t, err)
			last = resp.Header.Revision
		}
	}
	req <- struct{}{}
	progressed := func() (int64, int) {
		_, _, bs := r.snapshot()
		events := 0
		for _, b := range bs {
			if b.Progress {
				return b.Revision, events
			}
			events += len(b.Events)
		}
		return 0, events
	}
	require.Never(t, func() bool { rev, _ := progressed(); return rev != 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"no progress while a watch is held back")
	release()
	testenv.WaitFor(t, 5*time.Second, "a progress batch", func() bool { rev, _ := progressed(); return rev != 0 })
	rev, events := progressed()
	require.GreaterOrEqual(t, rev, last, "asked after the last write")
	require.Equal(t, 100, events, "every change below the progress revision came before it")
	st, _, _ := r.snapshot()
	require.Equal(t, etcdState(t, cli, "/a/", "/b/"), st)
}

// Two cases etcd would never answer: nothing written since the list (the
// watches start above the current revision), and someone else's watch on
// the same client starting far ahead (it would share the gRPC stream).
// Both are answered.
func TestProgressIsAnsweredWhenEtcdWouldNot(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	resp, err := cli.Put(context.Background(), "/a/k", "v")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A watch of the same client, with the same metadata as the mirror's
	// would have, that starts far beyond the current revision.
	foreign := cli.Watch(clientv3.WithRequireLeader(ctx), "/elsewhere", clientv3.WithRev(resp.Header.Revision+1_000_000))

	req := make(chan struct{}, 1)
	m, err := New(cli, []string{"/a/", "/b/"}, WithoutState(), WithProgressRequests(req))
	require.NoError(t, err)
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	progress := func() []int64 {
		_, _, bs := r.snapshot()
		var revs []int64
		for _, b := range bs {
			if b.Progress {
				revs = append(revs, b.Revision)
			}
		}
		return revs
	}
	testenv.WaitFor(t, 5*time.Second, "the list", func() bool { _, _, bs := r.snapshot(); return len(bs) > 0 })

	req <- struct{}{} // nothing written since the list
	testenv.WaitFor(t, 5*time.Second, "an answer with nothing written", func() bool { return len(progress()) == 1 })
	require.Equal(t, resp.Header.Revision, progress()[0])

	put, err := cli.Put(context.Background(), "/b/k", "v")
	require.NoError(t, err)
	req <- struct{}{} // a write since the list, and the foreign watch far ahead
	testenv.WaitFor(t, 5*time.Second, "an answer beside the foreign watch", func() bool { return len(progress()) == 2 })
	require.GreaterOrEqual(t, progress()[1], put.Header.Revision)
	cancel()
	for range foreign {
	}
}
