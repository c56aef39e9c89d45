package discovery

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/pkg/topics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newWatcher(t *testing.T, root string, ts map[string]topics.Config) *Watcher {
	t.Helper()
	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	w, err := s.NewWatcher(slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	w.SetTopics(ts)
	return w
}

// runWatcher runs w until the test ends and returns what it finds.
func runWatcher(t *testing.T, w *Watcher) <-chan Found {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Found, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = w.Run(ctx, func(f Found) bool { out <- f; return true }, func() {}, nil)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		for len(out) > 0 {
			(<-out).FD.Close()
		}
	})
	return out
}

func next(t *testing.T, found <-chan Found) Found {
	t.Helper()
	select {
	case f := <-found:
		t.Cleanup(func() { f.FD.Close() })
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no file found within 10 s")
		return Found{}
	}
}

// A file that is created, written, renamed away and deleted in a few
// microseconds is still found, and its descriptor still reads it.
func TestWatcherHoldsShortLivedFile(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, map[string]topics.Config{"t": cfg(t, `{"paths":["`+root+`/app.log"]}`)})
	require.Equal(t, []string{root}, w.Dirs())
	found := runWatcher(t, w)

	content := strings.Repeat("x", 40) + "\nline\n"
	path := filepath.Join(root, "app.log")
	mk(t, path, content)
	f := next(t, found)
	require.NoError(t, os.Rename(path, path+".1"))
	require.NoError(t, os.Remove(path+".1"))

	require.Equal(t, "t", f.Topic)
	require.Equal(t, path, f.File.Path)
	require.Len(t, f.File.Key, 32)
	got, err := io.ReadAll(io.NewSectionReader(f.FD, 0, 1<<20))
	require.NoError(t, err)
	require.Equal(t, content, string(got), "the deleted file is read through the held descriptor")
}

// The watcher may lag behind the events. Replayed in the kernel's order
// after the writer already rotated (gen1 at app.log.1, gen2 at app.log),
// the events still yield both generations: gen2 at app.log, and gen1 at
// app.log.1 through the rename pair, although the glob matches only
// app.log.
func TestWatcherCatchesFileRenamedBeforeItWasIdentified(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, map[string]topics.Config{"t": cfg(t, `{"paths":["`+root+`/app.log"]}`)})
	defer w.fsw.Close()
	path := filepath.Join(root, "app.log")
	gen1 := strings.Repeat("1", 40) + "\n"
	gen2 := strings.Repeat("2", 40) + "\n"
	mk(t, path, gen1)
	require.NoError(t, os.Rename(path, path+".1"))
	mk(t, path, gen2)

	var founds []Found
	collect := func(f Found) bool {
		founds = append(founds, f)
		return true
	}
	for _, ev := range []fsnotify.Event{
		{Name: path, Op: fsnotify.Create}, // gen1's create, handled when app.log is gen2
		{Name: path, Op: fsnotify.Write},
		{Name: path, Op: fsnotify.Rename}, // gen1: app.log -> app.log.1
		{Name: path + ".1", Op: fsnotify.Create},
		{Name: path, Op: fsnotify.Create}, // gen2's create
		{Name: path, Op: fsnotify.Write},
	} {
		require.True(t, w.handle(ev, collect))
	}
	contents := map[string]string{}
	for _, f := range founds {
		head := make([]byte, 1)
		_, err := f.FD.ReadAt(head, 0)
		require.NoError(t, err)
		contents[string(head)] = f.File.Path
		f.FD.Close()
	}
	require.Equal(t, map[string]string{"1": path + ".1", "2": path}, contents, "generation -> path it was found at")
	require.Len(t, founds, 3, "gen2 found twice (the agent keeps one), gen1 once")

	// A rename into a name the globs match is an ordinary create.
	founds = nil
	require.True(t, w.handle(fsnotify.Event{Name: filepath.Join(root, "other"), Op: fsnotify.Rename}, collect))
	require.True(t, w.handle(fsnotify.Event{Name: path + ".1", Op: fsnotify.Create}, collect))
	require.Empty(t, founds, "app.log.1 did not come from a name the globs match")
}

// Writes to a file already identified cost nothing; too-short files are
// identified once they are long enough; files the globs do not match, or
// that the exclusions drop, are never opened.
func TestWatcherIdentifiesOncePerFile(t *testing.T) {
	root := t.TempDir()
	w := newWatcher(t, root, map[string]topics.Config{"t": cfg(t, `{"paths":["`+root+`/*.log"],"exclude":["skip.log"]}`)})
	found := runWatcher(t, w)
	path := filepath.Join(root, "app.log")
	mk(t, filepath.Join(root, "skip.log"), strings.Repeat("s", 40)+"\n")
	mk(t, filepath.Join(root, "app.txt"), strings.Repeat("t", 40)+"\n")
	mk(t, path, "short")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteString(strings.Repeat("x", 40) + "\n")
	require.NoError(t, err)
	got := next(t, found)
	require.Equal(t, path, got.File.Path)
	for range 20 {
		_, err = f.WriteString("more\n")
		require.NoError(t, err)
	}
	// A marker file after the writes: once it is found, every earlier
	// event was handled.
	marker := filepath.Join(root, "marker.log")
	mk(t, marker, strings.Repeat("m", 40)+"\n")
	require.Equal(t, marker, next(t, found).File.Path, "nothing found for the writes, skip.log or app.txt")
}

// The watched directories follow the globs: the base of each glob, the
// directories a glob's directory part matches, none outside the roots.
func TestWatcherDirs(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/x", "a/y", "b/deep/er"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	w := newWatcher(t, root, map[string]topics.Config{
		"one": cfg(t, `{"paths":["`+root+`/a/*/app.log"]}`),
		"two": cfg(t, `{"paths":["`+root+`/b/**/*.log"]}`),
		"out": cfg(t, `{"paths":["/etc/*.conf"]}`),
	})
	defer w.fsw.Close()
	want := []string{}
	for _, d := range []string{"a/x", "a/y", "b", "b/deep", "b/deep/er"} {
		want = append(want, filepath.Join(root, d))
	}
	require.Equal(t, want, w.Dirs())
	w.SetTopics(map[string]topics.Config{"one": cfg(t, `{"paths":["`+root+`/a/x/app.log"]}`)})
	require.Equal(t, []string{filepath.Join(root, "a/x")}, w.Dirs(), "directories no glob needs are let go")
}

// TestSameTopicsKeepTheirSet: the scans set the topics again and again;
// the same topics keep the same set, which is what the cache of paths no
// glob matches is checked against, and a change replaces it.
func TestSameTopicsKeepTheirSet(t *testing.T) {
	root := t.TempDir()
	ts := map[string]topics.Config{"app": {Paths: []string{root + "/*.log"}}}
	w := newWatcher(t, root, ts)
	runWatcher(t, w)
	set := w.topics.Load()
	w.SetTopics(map[string]topics.Config{"app": {Paths: []string{root + "/*.log"}}})
	require.Same(t, set, w.topics.Load(), "the same topics")
	w.SetTopics(map[string]topics.Config{"app": {Paths: []string{root + "/*.txt"}}})
	require.NotSame(t, set, w.topics.Load(), "changed topics")
}

// TestWatchedScansTrustTheCache: in a watched directory, a scan trusts an
// identity an lstat confirmed for trustFor: a change the watch sees (a
// write through the file's own path) is noticed at the next scan, one it
// cannot see (through a hard link in an unwatched directory) once the
// trust runs out.
func TestWatchedScansTrustTheCache(t *testing.T) {
	root := t.TempDir()
	dir, other := filepath.Join(root, "logs"), filepath.Join(root, "elsewhere")
	require.NoError(t, os.MkdirAll(other, 0o755))
	path := filepath.Join(dir, "app.log")
	mk(t, path, strings.Repeat("a", fp)+"\n")
	require.NoError(t, os.Link(path, filepath.Join(other, "link.log")))
	c := cfg(t, `{"paths":["`+dir+`/*.log"]}`)
	w := newWatcher(t, root, map[string]topics.Config{"t": c})
	s := w.s
	now := time.Now()
	s.now = func() time.Time { return now }
	runWatcher(t, w)
	key := func() string {
		res := s.Scan("t", c)
		require.Len(t, res.Files, 1)
		return res.Files[0].Key
	}
	rewrite := func(p, b string) {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte(strings.Repeat(b, fp)), 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.NoError(t, os.Chtimes(p, fi.ModTime(), fi.ModTime())) // only ctime tells
	}
	first := key()
	require.Equal(t, first, key()) // confirmed by an lstat: trusted from now

	rewrite(path, "b")
	require.Eventually(t, func() bool { return key() != first }, 10*time.Second, 10*time.Millisecond,
		"a rewrite through the watched path is seen")
	second := key()
	key() // confirmed

	rewrite(filepath.Join(other, "link.log"), "c")
	require.Equal(t, second, key(), "a change the watch cannot see waits for the trust to run out")
	now = now.Add(trustFor)
	require.NotEqual(t, second, key(), "then an lstat sees it")
}
