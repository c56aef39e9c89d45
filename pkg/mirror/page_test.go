package mirror

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
)

// rangeSpy wraps the real client's KV and records every range request, and
// runs a test hook after the first page of a list (the real server answers
// everything).
type rangeSpy struct {
	clientv3.KV
	mu        sync.Mutex
	ranges    []clientv3.Op
	sizes     []int
	afterPage func(n int)
}

func spyRanges(cli *clientv3.Client) *rangeSpy {
	s := &rangeSpy{KV: cli.KV}
	cli.KV = s
	return s
}

func (s *rangeSpy) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := s.KV.Get(ctx, key, opts...)
	s.mu.Lock()
	s.ranges = append(s.ranges, clientv3.OpGet(key, opts...))
	if resp != nil {
		s.sizes = append(s.sizes, len(resp.Kvs))
	}
	hook, n := s.afterPage, len(s.ranges)
	s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return resp, err
}

func (s *rangeSpy) Txn(ctx context.Context) clientv3.Txn {
	s.mu.Lock()
	s.ranges = append(s.ranges, clientv3.OpTxn(nil, nil, nil)) // a list must not use one: recorded to fail the test
	s.mu.Unlock()
	return s.KV.Txn(ctx)
}

func (s *rangeSpy) record() ([]clientv3.Op, []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]clientv3.Op(nil), s.ranges...), append([]int(nil), s.sizes...)
}

func TestListIsPagedAtOneRevision(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli, test := e.Client(), e.Client()
	for i := range 25 {
		put(t, cli, fmt.Sprintf("/a/%02d", i), "v")
	}
	for i := range 7 {
		put(t, cli, fmt.Sprintf("/b/%02d", i), "w")
	}
	spy := spyRanges(cli)
	// Changes made while the list pages through must not show in the
	// snapshot (it is one revision) but must arrive by the watch.
	spy.afterPage = func(n int) {
		if n == 1 {
			put(t, test, "/a/99", "late")
			del(t, test, "/a/00")
		}
	}
	m, err := New(cli, []string{"/a/", "/b/"}, WithPageSize(10))
	require.NoError(t, err)
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "mirror to match etcd", func() bool {
		st, _, _ := r.snapshot()
		return fmt.Sprint(st) == fmt.Sprint(etcdState(t, test, "/a/", "/b/"))
	})
	_, _, batches := r.snapshot()
	require.True(t, batches[0].Snapshot)
	require.Len(t, batches[0].Events, 32, "the snapshot is the state at the first page's revision")
	require.Equal(t, "/a/00", batches[0].Events[0].KV.Key)

	ops, sizes := spy.record()
	require.Len(t, ops, 4, "25 keys in pages of 10, then 7 in one: %v", sizes)
	rev := ops[1].Rev()
	require.NotZero(t, rev, "pages after the first are read at its revision")
	for i, op := range ops {
		require.True(t, op.IsGet(), "request %d is a range, never a Txn of whole prefixes", i)
		require.Equal(t, int64(10), op.Limit(), "request %d", i)
		require.LessOrEqual(t, sizes[i], 10)
		if i > 0 {
			require.Equal(t, rev, op.Rev(), "request %d", i)
		}
	}
	require.Equal(t, "/a/09\x00", string(ops[1].KeyBytes()), "the next page starts after the last key read")
}

func TestListRestartsWhenItsRevisionIsCompacted(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli, test := e.Client(), e.Client()
	for i := range 15 {
		put(t, cli, fmt.Sprintf("/a/%02d", i), "v")
	}
	spy := spyRanges(cli)
	spy.afterPage = func(n int) {
		if n == 1 {
			del(t, test, "/a/14")
			e.CompactAll(test)
		}
	}
	m, err := New(cli, []string{"/a/"}, WithPageSize(10))
	require.NoError(t, err)
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "snapshot", func() bool { _, _, b := r.snapshot(); return len(b) > 0 })
	_, _, batches := r.snapshot()
	require.Len(t, batches[0].Events, 14, "the list restarted at a revision after the delete")
	ops, _ := spy.record()
	require.Len(t, ops, 4, "page 1, page 2 refused (compacted), then two pages again")
}

func TestWithoutValuesKeepsNoValuesAndStillDiffs(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	fw := testenv.InjectWatchFaults(cli)
	put(t, cli, "/o/keep", "1")
	put(t, cli, "/o/change", "1")
	put(t, cli, "/k/x", "big value")
	m, err := New(cli, []string{"/o/", "/k/"}, WithoutValues(), WithKeysOnly("/k/"), WithBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	// Hold the first watch back, change a key and compact: the mirror must
	// re-list and find the change from revisions alone.
	release := fw.Hold()
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "snapshot", func() bool { _, _, b := r.snapshot(); return len(b) > 0 })
	_, log, _ := r.snapshot()
	require.Equal(t, []string{"put /k/x=", "put /o/change=1", "put /o/keep=1"}, log, "keys-only prefix listed without values")

	put(t, cli, "/o/change", "2")
	put(t, cli, "/elsewhere", "x") // so the compaction removes the change's revision
	e.CompactAll(cli)
	release()
	testenv.WaitFor(t, 5*time.Second, "resync", func() bool { _, _, b := r.snapshot(); return len(b) > 1 })
	_, log, _ = r.snapshot()
	require.Equal(t, "put /o/change=2", log[3], "the re-list diff finds the change by revision")
	require.Len(t, log, 4, "unchanged keys not reported again: %v", log)
	del(t, cli, "/o/keep")
	testenv.WaitFor(t, 5*time.Second, "delete", func() bool { _, l, _ := r.snapshot(); return len(l) == 5 })
	_, log, _ = r.snapshot()
	require.Equal(t, "delete /o/keep=", log[4], "no value kept, so none on the delete")
}

func TestWithoutStateHandsOverPagesAndRelistsAsSnapshots(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	fw := testenv.InjectWatchFaults(cli)
	for i := range 5 {
		put(t, cli, fmt.Sprintf("/s/%d", i), "v")
	}
	m, err := New(cli, []string{"/s/"}, WithoutState(), WithPageSize(2), WithBackoff(time.Millisecond, 10*time.Millisecond))
	require.NoError(t, err)
	release := fw.Hold()
	r := newRecorder()
	stop := runMirror(t, m, r)
	defer stop()
	testenv.WaitFor(t, 5*time.Second, "the first list", func() bool { _, _, b := r.snapshot(); return len(b) == 3 })
	_, _, batches := r.snapshot()
	for i, b := range batches {
		require.Equal(t, i == 0, b.Snapshot, "batch %d", i)
		require.Equal(t, i < 2, b.Partial, "batch %d", i)
		require.LessOrEqual(t, len(b.Events), 2)
		require.Equal(t, batches[0].Revision, b.Revision)
	}

	// A broken watch: the re-list is a whole new snapshot, page by page.
	del(t, cli, "/s/0")
	put(t, cli, "/elsewhere", "x") // so the compaction removes the delete's revision
	e.CompactAll(cli)
	release()
	testenv.WaitFor(t, 5*time.Second, "the re-list", func() bool { _, _, b := r.snapshot(); return len(b) == 5 })
	_, _, batches = r.snapshot()
	require.True(t, batches[3].Snapshot)
	require.True(t, batches[3].Partial)
	require.False(t, batches[4].Partial)
	require.False(t, batches[4].Resync)
	require.Equal(t, "/s/1", batches[3].Events[0].KV.Key)

	// Deletes pass through with the key alone.
	del(t, cli, "/s/4")
	testenv.WaitFor(t, 5*time.Second, "the delete", func() bool { _, _, b := r.snapshot(); return len(b) == 6 })
	_, log, _ := r.snapshot()
	require.Equal(t, "delete /s/4=", log[len(log)-1])
}

// A long list is split in halves of the key space, so that no request makes
// etcd count much more than its own part; every key still comes exactly
// once, in order, at one revision.
func TestLongListsAreSplitAndStillExact(t *testing.T) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	var want []string
	var ops []clientv3.Op
	for i := range 500 {
		k := fmt.Sprintf("/big/%08x", uint32(i)*2654435761)
		want = append(want, k)
		ops = append(ops, clientv3.OpPut(k, "v"))
		if len(ops) == 100 {
			_, err := cli.Txn(context.Background()).Then(ops...).Commit()
			require.NoError(t, err)
			ops = ops[:0]
		}
	}
	slices.Sort(want)
	spy := spyRanges(cli)
	var got []string
	rev, err := ListPages(context.Background(), cli, []string{"/big/"}, 5, nil, func(r int64, page []*mvccpb.KeyValue) error {
		for _, kv := range page {
			got = append(got, string(kv.Key))
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, want, got, "every key once, in order")
	reqs, _ := spy.record()
	split := 0
	for i, op := range reqs {
		if i > 0 {
			require.Equal(t, rev, op.Rev())
		}
		if string(op.RangeBytes()) != "/big0" {
			split++
		}
	}
	require.Positive(t, split, "the range was split")
	t.Logf("%d requests, %d on split ranges, for 500 keys in pages of 5", len(reqs), split)
}

func TestMidKey(t *testing.T) {
	for _, c := range []struct{ a, b string }{{"/a/", "/a0"}, {"/a/x", "/a/y"}, {"ab", "ab\x00\x01"}, {"/o/0000", "/o0"}} {
		m, ok := midKey(c.a, c.b)
		require.True(t, ok, "%q..%q", c.a, c.b)
		require.Less(t, c.a, m)
		require.Less(t, m, c.b)
	}
	_, ok := midKey("a", "a\x00")
	require.False(t, ok, "nothing strictly between")
}
