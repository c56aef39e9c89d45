package topics

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T, root string) (*Store, *clientv3.Client, *testenv.Etcd) {
	e := testenv.StartEtcd(t)
	cli := e.Client()
	ks, err := keyspace.New(root)
	require.NoError(t, err)
	return NewStore(cli, ks), cli, e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestStoreRoundTrip(t *testing.T) {
	s, cli, _ := newStore(t, "/prod")
	ctx := ctxT(t)
	in := Config{Paths: []string{"/var/log/app/*.log"}, Shared: true, IgnoreOlder: Duration(time.Hour)}
	stored, err := s.Put(ctx, "app", in)
	require.NoError(t, err)
	require.Equal(t, "app", stored.KafkaTopic, "defaults filled")

	got, err := s.Get(ctx, "app")
	require.NoError(t, err)
	require.Equal(t, stored, got.Config)
	require.Equal(t, "app", got.Name)

	// The value sits under the root prefix, at the documented key.
	resp, err := cli.Get(ctx, "/prod/topics/app")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)

	_, err = s.Get(ctx, "missing")
	require.ErrorIs(t, err, ErrNotFound)

	require.NoError(t, s.Delete(ctx, "app"))
	_, err = s.Get(ctx, "app")
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorIs(t, s.Delete(ctx, "app"), ErrNotFound)
}

func TestStorePutRejectsInvalid(t *testing.T) {
	s, cli, _ := newStore(t, "")
	ctx := ctxT(t)
	_, err := s.Put(ctx, "t", Config{Paths: []string{"relative"}})
	require.ErrorIs(t, err, ErrInvalid)
	_, err = s.Put(ctx, "bad name", Config{Paths: []string{"/x"}})
	require.ErrorIs(t, err, ErrInvalid)
	resp, err := cli.Get(ctx, "/topics/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Empty(t, resp.Kvs, "nothing may be written for an invalid config")
}

func TestStoreListManyAndInvalid(t *testing.T) {
	s, cli, _ := newStore(t, "")
	ctx := ctxT(t)
	const n = 300
	for i := range n {
		_, err := s.Put(ctx, fmt.Sprintf("t%03d", i), Config{Paths: []string{fmt.Sprintf("/var/log/%d/*.log", i)}})
		require.NoError(t, err)
	}
	// Written behind the store's back, as with plain etcdctl.
	_, err := cli.Put(ctx, "/topics/broken", `{"paths":"nope"}`)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/topics/t001/10.0.0.1", `{"agent":"10.0.0.1"}`) // a heartbeat
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/topics/bad name", `{}`) // junk
	require.NoError(t, err)

	entries, junk, err := s.List(ctx)
	require.NoError(t, err)
	require.Len(t, entries, n+1)
	require.Equal(t, []string{"/topics/bad name"}, junk)
	broken := entries[0] // sorted by name: "broken" < "t000"
	for i, e := range entries[1:] {
		require.Equal(t, fmt.Sprintf("t%03d", i), e.Name)
		require.NoError(t, e.Err)
		require.Equal(t, []string{fmt.Sprintf("/var/log/%d/*.log", i)}, e.Config.Paths)
	}
	require.Equal(t, "broken", broken.Name)
	require.ErrorIs(t, broken.Err, ErrInvalid)
	require.True(t, hasField(broken.Err, "paths"), "%v", broken.Err)

	_, err = s.Get(ctx, "broken")
	require.ErrorIs(t, err, ErrInvalid)
}

// watchLog collects watch events as strings.
type watchLog struct {
	mu  sync.Mutex
	evs []string
}

func (w *watchLog) handle(ev Event) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev.Type {
	case Snapshot:
		var names []string
		for _, e := range ev.Entries {
			names = append(names, e.Name)
		}
		w.evs = append(w.evs, fmt.Sprintf("snapshot %v junk=%v", names, ev.JunkKeys))
	case Changed:
		s := fmt.Sprintf("changed %s %v", ev.Name, ev.Entry.Config.Paths)
		if ev.Entry.Err != nil {
			s = fmt.Sprintf("changed %s invalid", ev.Name)
		}
		w.evs = append(w.evs, s)
	case Deleted:
		w.evs = append(w.evs, "deleted "+ev.Name)
	case Junk:
		w.evs = append(w.evs, "junk "+ev.Key)
	}
	return nil
}

func (w *watchLog) get() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.evs...)
}

func startWatch(t *testing.T, s *Store, w *watchLog) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, slog.New(slog.DiscardHandler), w.handle) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func TestWatchSnapshotThenChangesInOrder(t *testing.T) {
	s, cli, _ := newStore(t, "")
	ctx := ctxT(t)
	_, err := s.Put(ctx, "t1", Config{Paths: []string{"/a"}})
	require.NoError(t, err)
	w := &watchLog{}
	startWatch(t, s, w)
	testenv.WaitFor(t, 5*time.Second, "snapshot", func() bool { return len(w.get()) == 1 })

	_, err = s.Put(ctx, "t10", Config{Paths: []string{"/b"}})
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/topics/t1/10.0.0.1", "heartbeat")
	require.NoError(t, err)
	_, err = s.Put(ctx, "t1", Config{Paths: []string{"/c"}})
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/topics/t10", `{"paths":["relative"]}`)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/topics/x/y/z", "junk")
	require.NoError(t, err)
	require.NoError(t, s.Delete(ctx, "t1"))
	want := []string{
		"snapshot [t1] junk=[]",
		"changed t10 [/b]",
		"changed t1 [/c]",
		"changed t10 invalid",
		"junk /topics/x/y/z",
		"deleted t1",
	}
	testenv.WaitFor(t, 5*time.Second, "all changes", func() bool { return len(w.get()) == len(want) })
	require.Equal(t, want, w.get())
}

func TestWatchSurvivesCompactionAndReportsDeletes(t *testing.T) {
	s, cli, e := newStore(t, "")
	faults := testenv.InjectWatchFaults(cli)
	ctx := ctxT(t)
	for _, n := range []string{"keep", "gone", "changed"} {
		_, err := s.Put(ctx, n, Config{Paths: []string{"/v1"}})
		require.NoError(t, err)
	}
	w := &watchLog{}
	startWatch(t, s, w)
	testenv.WaitFor(t, 5*time.Second, "snapshot", func() bool { return len(w.get()) == 1 })
	_, err := s.Put(ctx, "before", Config{Paths: []string{"/v1"}})
	require.NoError(t, err)
	testenv.WaitFor(t, 5*time.Second, "first change", func() bool { return len(w.get()) == 2 })

	// Break the watch and keep it down while topics change and etcd is
	// compacted past the watcher's revision.
	release := faults.Hold()
	calls := faults.Calls()
	faults.BreakAll()
	testenv.WaitFor(t, 5*time.Second, "the mirror to try to watch again", func() bool { return faults.Calls() > calls })
	require.NoError(t, s.Delete(ctx, "gone"))
	_, err = s.Put(ctx, "changed", Config{Paths: []string{"/v2"}})
	require.NoError(t, err)
	_, err = s.Put(ctx, "new", Config{Paths: []string{"/v1"}})
	require.NoError(t, err)
	e.CompactAll(cli)
	release()

	want := []string{
		"snapshot [changed gone keep] junk=[]",
		"changed before [/v1]",
		"changed changed [/v2]",
		"deleted gone",
		"changed new [/v1]",
	}
	testenv.WaitFor(t, 10*time.Second, "re-list after compaction", func() bool { return len(w.get()) >= len(want) })
	require.Equal(t, want, w.get(), "each change exactly once, the delete included")

	_, err = s.Put(ctx, "later", Config{Paths: []string{"/v1"}})
	require.NoError(t, err)
	testenv.WaitFor(t, 5*time.Second, "watch carries on", func() bool { return len(w.get()) == len(want)+1 })
	require.Equal(t, "changed later [/v1]", w.get()[len(want)])
}
