package tailer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nxadm/tail shares one inotify watcher per process, on purpose.
		goleak.IgnoreAnyFunction("github.com/nxadm/tail/watch.(*InotifyTracker).run"),
		goleak.IgnoreAnyFunction("github.com/fsnotify/fsnotify.(*Watcher).readEvents"),
	)
}

const fpBytes = 32

// collector gathers emitted lines.
type collector struct {
	mu    sync.Mutex
	lines []Line
}

func (c *collector) emit(l Line) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.Data = append([]byte(nil), l.Data...) // valid only during emit
	c.lines = append(c.lines, l)
	return nil
}

func (c *collector) get() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Line(nil), c.lines...)
}

func (c *collector) count() int { return len(c.get()) }

type run struct {
	tl   *Tailer
	col  *collector
	done chan error
	stop context.CancelFunc
}

func startTailer(t *testing.T, path string, offset int64, mod func(*Config)) *run {
	t.Helper()
	return startTailerWith(t, path, offset, func(c *Config, _ *collector) {
		if mod != nil {
			mod(c)
		}
	})
}

// startTailerWith is startTailer with a mod that also gets the collector
// the run emits into.
func startTailerWith(t *testing.T, path string, offset int64, mod func(*Config, *collector)) *run {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	id, err := fileid.Of(f, fpBytes, false)
	f.Close()
	require.NoError(t, err)
	cfg := Config{Path: path, Identity: id, FingerprintBytes: fpBytes, Offset: offset, MaxLineBytes: 1 << 20,
		RotatedIdle: 200 * time.Millisecond, CheckInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	col := &collector{}
	mod(&cfg, col)
	tl, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{tl: tl, col: col, done: make(chan error, 1), stop: cancel}
	go func() { r.done <- tl.Run(ctx, r.col.emit) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// wait returns the tailer's result, failing the test with what if it does
// not end within 10 s. It may be called again: the result is kept.
func (r *run) wait(t *testing.T, what string) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal(what)
		return nil
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	require.NoError(t, err)
	_, err = f.WriteString(s)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func header() string { return strings.Repeat("#", fpBytes) + "\n" }

// checkOffsets asserts each line's Start is the byte offset of its data in
// content and that lines are contiguous.
func checkOffsets(t *testing.T, content []byte, lines []Line, from int64) {
	t.Helper()
	next := from
	for i, l := range lines {
		require.Equal(t, next, l.Start, "line %d starts where the previous ended", i)
		require.True(t, bytes.Equal(content[l.Start:l.Start+int64(len(l.Data))], l.Data), "line %d data at its offset", i)
		next = l.End
	}
}

func TestReadsExistingThenFollows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header())
	for i := range 100 {
		appendTo(t, path, fmt.Sprintf("line %d\n", i))
	}
	r := startTailer(t, path, 0, nil)
	testenv.WaitFor(t, 5*time.Second, "existing lines", func() bool { return r.col.count() == 101 })
	for i := 100; i < 200; i++ {
		appendTo(t, path, fmt.Sprintf("line %d\n", i))
	}
	// A line written in two parts arrives as one.
	appendTo(t, path, "first half ")
	appendTo(t, path, "second half\n")
	testenv.WaitFor(t, 5*time.Second, "appended lines", func() bool { return r.col.count() == 202 })
	lines := r.col.get()
	content, _ := os.ReadFile(path)
	checkOffsets(t, content, lines, 0)
	require.Equal(t, "line 199", string(lines[200].Data))
	require.Equal(t, "first half second half", string(lines[201].Data))
	require.Equal(t, int64(len(content)), lines[201].End)
	require.Equal(t, int64(len(content)), r.tl.Offset())
}

func TestResumesFromOffset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"a\nb\nc\n")
	off := int64(len(header()) + 2) // after "a\n"
	r := startTailer(t, path, off, nil)
	testenv.WaitFor(t, 5*time.Second, "lines", func() bool { return r.col.count() == 2 })
	lines := r.col.get()
	require.Equal(t, "b", string(lines[0].Data))
	require.Equal(t, off, lines[0].Start)
}

func TestLongLines(t *testing.T) {
	for _, truncate := range []bool{false, true} {
		t.Run(fmt.Sprintf("truncate=%v", truncate), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.log")
			long := strings.Repeat("x", 250)
			appendTo(t, path, header()+long+"\nshort\n")
			r := startTailer(t, path, 0, func(c *Config) { c.MaxLineBytes = 100; c.Truncate = truncate })
			want := 5 // header, 3 parts, short
			if truncate {
				want = 3
			}
			testenv.WaitFor(t, 5*time.Second, "existing lines", func() bool { return r.col.count() == want })
			// The same through the follow path (nxadm/tail).
			appendTo(t, path, long+"\nend\n")
			testenv.WaitFor(t, 5*time.Second, "followed lines", func() bool { return r.col.count() == 2*want-1 })
			lines := r.col.get()
			content, _ := os.ReadFile(path)
			if !truncate {
				checkOffsets(t, content, lines, 0)
				require.Equal(t, []int{1, 2, 3}, []int{lines[1].Part, lines[2].Part, lines[3].Part})
				require.True(t, lines[3].Last)
				require.False(t, lines[1].Last)
				require.Len(t, lines[3].Data, 50)
			} else {
				require.True(t, lines[1].Truncated)
				require.Len(t, lines[1].Data, 100)
				require.Equal(t, lines[2].Start, lines[1].End, "a truncated line's End is past its newline")
				require.True(t, lines[3].Truncated, "through nxadm/tail too")
				require.Equal(t, "end", string(lines[4].Data))
			}
			for _, l := range lines {
				require.LessOrEqual(t, len(l.Data), 100)
			}
		})
	}
}

func TestRenameRotationFinishesOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendTo(t, path, header())
	r := startTailer(t, path, 0, nil)
	testenv.WaitFor(t, 5*time.Second, "the tailer to open the file", func() bool { return r.col.count() > 0 })
	for i := range 50 {
		appendTo(t, path, fmt.Sprintf("old %d\n", i))
	}
	// Rename right after writing, then more lines to the renamed file (the
	// writer still has it open) and a final line without newline.
	require.NoError(t, os.Rename(path, path+".1"))
	appendTo(t, path+".1", "late\nno newline")
	appendTo(t, path, header()+"new file\n")
	require.ErrorIs(t, r.wait(t, "tailer did not finish the rotated file"), ErrFinished)
	lines := r.col.get()
	require.Len(t, lines, 53)
	content, _ := os.ReadFile(path + ".1")
	checkOffsets(t, content, lines, 0)
	last := lines[52]
	require.Equal(t, "no newline", string(last.Data))
	require.True(t, last.NoNewline)
	require.Equal(t, int64(len(content)), last.End)
}

func TestRotatedBeforeOpenFoundByIdentity(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendTo(t, path, header()+"a\nb\n")
	f, _ := os.Open(path)
	id, _ := fileid.Of(f, fpBytes, false)
	f.Close()
	require.NoError(t, os.Rename(path, path+".1"))
	appendTo(t, path, strings.Repeat("n", 40)+"\n")
	tl, err := New(Config{Path: path, Identity: id, FingerprintBytes: fpBytes, MaxLineBytes: 100,
		RotatedIdle: 50 * time.Millisecond, CheckInterval: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	col := &collector{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.ErrorIs(t, tl.Run(ctx, col.emit), ErrFinished)
	require.Len(t, col.get(), 3)
	require.Equal(t, "b", string(col.get()[2].Data))
}

func TestDeletedWhileReading(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header())
	for i := range 1000 {
		appendTo(t, path, fmt.Sprintf("line %d\n", i))
	}
	r := startTailer(t, path, 0, nil)
	testenv.WaitFor(t, 5*time.Second, "the tailer to open the file", func() bool { return r.col.count() > 0 })
	require.NoError(t, os.Remove(path))
	require.ErrorIs(t, r.wait(t, "tailer did not finish the deleted file"), ErrFinished)
	require.Len(t, r.col.get(), 1001, "a deleted file is read to its end through our descriptor")
}

func TestTruncation(t *testing.T) {
	t.Run("same head: read again from 0", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "app.log")
		appendTo(t, path, header()+"a\nb\n")
		var truncatedAt int64
		var mu sync.Mutex
		r := startTailer(t, path, 0, func(c *Config) {
			c.OnTruncate = func(o int64) { mu.Lock(); truncatedAt = o; mu.Unlock() }
		})
		testenv.WaitFor(t, 5*time.Second, "lines", func() bool { return r.col.count() == 3 })
		require.NoError(t, os.WriteFile(path, []byte(header()+"c\n"), 0o644)) // truncates in place
		testenv.WaitFor(t, 5*time.Second, "re-read", func() bool { return r.col.count() == 5 })
		lines := r.col.get()
		require.Equal(t, int64(0), lines[3].Start)
		require.Equal(t, "c", string(lines[4].Data))
		mu.Lock()
		require.Equal(t, int64(len(header())+4), truncatedAt)
		mu.Unlock()
	})
	t.Run("new head: identity gone", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "app.log")
		appendTo(t, path, header()+"a\nb\n")
		r := startTailer(t, path, 0, nil)
		testenv.WaitFor(t, 5*time.Second, "lines", func() bool { return r.col.count() == 3 })
		require.NoError(t, os.WriteFile(path, []byte(strings.Repeat("other ", 10)+"\n"), 0o644))
		require.ErrorIs(t, r.wait(t, "tailer did not notice the rewrite"), ErrGone)
	})
}

func TestMismatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendTo(t, path, header())
	f, _ := os.Open(path)
	id, _ := fileid.Of(f, fpBytes, false)
	f.Close()
	require.NoError(t, os.Remove(path))
	appendTo(t, path, strings.Repeat("other head ", 5)+"\n")
	tl, err := New(Config{Path: path, Identity: id, FingerprintBytes: fpBytes, MaxLineBytes: 100})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = tl.Run(ctx, func(Line) error { return nil })
	require.ErrorIs(t, err, ErrMismatch)
}

func TestEmitErrorStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"a\n")
	f, _ := os.Open(path)
	id, _ := fileid.Of(f, fpBytes, false)
	f.Close()
	tl, err := New(Config{Path: path, Identity: id, FingerprintBytes: fpBytes, MaxLineBytes: 100, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	boom := errors.New("boom")
	require.ErrorIs(t, tl.Run(context.Background(), func(Line) error { return boom }), boom)
}

func TestPartialLineShippedAfterIdleTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"whole\n")
	r := startTailer(t, path, 0, func(c *Config) { c.PartialTimeout = 200 * time.Millisecond })
	testenv.WaitFor(t, 5*time.Second, "existing lines", func() bool { return r.col.count() == 2 })
	// Two parts with a pause shorter than the timeout: one line.
	appendTo(t, path, "first part ")
	appendTo(t, path, "second part\n")
	testenv.WaitFor(t, 5*time.Second, "the joined line", func() bool { return r.col.count() == 3 })
	require.Equal(t, "first part second part", string(r.col.get()[2].Data))
	// A last line that never gets its newline is shipped after the timeout.
	appendTo(t, path, "no newline yet")
	testenv.WaitFor(t, 5*time.Second, "the partial line after the timeout", func() bool { return r.col.count() == 4 })
	last := r.col.get()[3]
	require.Equal(t, "no newline yet", string(last.Data))
	require.True(t, last.NoNewline)
	// What comes later is a new line, at its own offset.
	appendTo(t, path, " and the rest\nnext\n")
	testenv.WaitFor(t, 5*time.Second, "the following lines", func() bool { return r.col.count() == 6 })
	content, _ := os.ReadFile(path)
	checkOffsets(t, content, r.col.get(), 0)
	require.Equal(t, " and the rest", string(r.col.get()[4].Data))
}

// TestCopytruncateThenLargerRewrite: the file is truncated and at once
// rewritten with other content, larger than before. Not one line of the
// new content may be taken for the old file's: the tailer ends with
// ErrGone having emitted only the old lines (the new content is a new file
// for discovery, read from 0 under its own identity).
func TestCopytruncateThenLargerRewrite(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("app-%d.log", round))
		appendTo(t, path, header())
		for i := range 50 {
			appendTo(t, path, fmt.Sprintf("old %d\n", i))
		}
		r := startTailer(t, path, 0, nil)
		testenv.WaitFor(t, 5*time.Second, "old lines", func() bool { return r.col.count() == 51 })
		// copytruncate: truncate in place, then the application writes on,
		// quickly past the old size.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		require.NoError(t, err)
		var b strings.Builder
		b.WriteString(strings.Repeat("N", fpBytes) + "\n")
		for i := range 500 {
			fmt.Fprintf(&b, "new %d\n", i)
		}
		_, err = f.WriteString(b.String())
		require.NoError(t, err)
		require.NoError(t, f.Close())
		require.ErrorIs(t, r.wait(t, "tailer did not notice the rewrite"), ErrGone)
		for _, l := range r.col.get() {
			require.False(t, strings.HasPrefix(string(l.Data), "new ") || strings.HasPrefix(string(l.Data), "NNN"),
				"round %d: a line of the new content was emitted as the old file's: %q", round, l.Data)
		}
	}
}

// TestRotatedFlagFinishesFileAtItsPath: a file found by identity under a
// name the globs do not match (app.log.1) is finished once read and idle,
// although its path still names it.
func TestRotatedFlagFinishesFileAtItsPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log.1")
	appendTo(t, path, header()+"a\nb\n")
	r := startTailer(t, path, 0, func(c *Config) { c.Rotated = true })
	require.ErrorIs(t, r.wait(t, "the rotated file was not finished"), ErrFinished)
	require.Len(t, r.col.get(), 3)
}

// heldAndDeleted writes a file of three lines at app.log in a new
// directory, opens it, renames it away and deletes it, and puts another
// file at the path: it returns the path and the descriptor and identity of
// the deleted file.
func heldAndDeleted(t *testing.T) (string, *os.File, protocol.FileIdentity) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"a\nb\n")
	fd, err := os.Open(path)
	require.NoError(t, err)
	require.NoError(t, os.Rename(path, path+".1"))
	require.NoError(t, os.Remove(path+".1"))
	appendTo(t, path, header()+"another file\n")
	id, err := fileid.Of(fd, fpBytes, false)
	require.NoError(t, err)
	return path, fd, id
}

// TestHeldDescriptorReadAfterUnlink: a file opened when it was found (File)
// is read through that descriptor although it was renamed away and then
// deleted before the tailer started.
func TestHeldDescriptorReadAfterUnlink(t *testing.T) {
	path, fd, id := heldAndDeleted(t)
	r := startTailer(t, path, 0, func(c *Config) { c.File, c.Identity = fd, id })
	require.ErrorIs(t, r.wait(t, "the deleted file was not finished"), ErrFinished)
	lines := r.col.get()
	require.Len(t, lines, 3)
	require.Equal(t, "b", string(lines[2].Data))
}

// TestFlushBeforeWaiting: a sink that only passes lines on at Flush gets
// every line without waiting for more: the tailer flushes before it waits,
// whether it read through its descriptor or followed the file, and before
// it returns.
func TestFlushBeforeWaiting(t *testing.T) {
	for _, poll := range []bool{true, false} {
		t.Run(fmt.Sprintf("poll=%v", poll), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			appendTo(t, path, header())
			var mu sync.Mutex
			flushed := 0 // lines emitted before the last Flush
			r := startTailerWith(t, path, 0, func(c *Config, col *collector) {
				c.Poll = poll
				c.Flush = func() error {
					n := col.count() // emit runs on this goroutine: every line so far
					mu.Lock()
					defer mu.Unlock()
					flushed = n
					return nil
				}
			})
			passedOn := func() int {
				mu.Lock()
				defer mu.Unlock()
				return flushed
			}
			var b strings.Builder
			for i := range 100 {
				fmt.Fprintf(&b, "line %d\n", i)
			}
			appendTo(t, path, b.String())
			testenv.WaitFor(t, 10*time.Second, "the lines read through the descriptor flushed", func() bool { return passedOn() == 101 })
			for i := range 5 { // followed one by one
				appendTo(t, path, fmt.Sprintf("more %d\n", i))
				testenv.WaitFor(t, 10*time.Second, "a followed line flushed", func() bool { return passedOn() == 102+i })
			}
			appendTo(t, path, "last\n")
			require.NoError(t, os.Remove(path))
			require.ErrorIs(t, r.wait(t, "the tailer to finish the deleted file"), ErrFinished)
			require.Equal(t, 107, passedOn(), "flushed before Run returned")
		})
	}
}

// TestFlushErrorEndsRun: a Flush that fails ends Run with its error, even
// when the file was finished: a file is not done until its lines were
// handed over.
func TestFlushErrorEndsRun(t *testing.T) {
	// Gone: read to its end through the descriptor, then finished.
	path, fd, id := heldAndDeleted(t)
	boom := errors.New("shipper stopped")
	var mu sync.Mutex
	calls := 0
	r := startTailerWith(t, path, 0, func(c *Config, _ *collector) {
		c.File, c.Identity = fd, id
		c.RotatedIdle = time.Nanosecond // finished right after the first read
		c.Flush = func() error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls == 1 {
				return nil // the lines read
			}
			return boom // the final flush, as Run would return ErrFinished
			// (or, if the clock did not move, the next read's)
		}
	})
	require.ErrorIs(t, r.wait(t, "the tailer to end"), boom)
	require.Len(t, r.col.get(), 3)
}

// TestFlushErrorEndsInactiveRun: a file that went quiet is not parked
// with lines its sink failed to hand over: the final flush's error ends
// Run instead of ErrInactive, so the caller reads them again now, not at
// the file's next write.
func TestFlushErrorEndsInactiveRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"one\n")
	boom := errors.New("shipper stopped")
	var kept atomic.Bool
	r := startTailer(t, path, 0, func(c *Config) {
		c.Inactive = 100 * time.Millisecond
		c.Keep = func(f *os.File) { kept.Store(true); f.Close() }
		c.Flush = func() error {
			if kept.Load() { // Run's final flush: after run handed the descriptor over
				return boom
			}
			return nil
		}
	})
	require.ErrorIs(t, r.wait(t, "the tailer to end"), boom)
}

// A file opened empty has a head of no bytes: the head grows from the
// bytes read of its start, so that a later rewrite is still told from
// growth.
func TestHeadGrowsFromWhatWasRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, "")
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	tl := &Tailer{cfg: Config{FingerprintBytes: 8}, f: f}
	appendTo(t, path, "old 1\nold 2\n")
	require.True(t, tl.headSame())
	tl.grow([]byte("old 1\n"), 0)
	tl.grow([]byte("old 2\n"), 6)
	require.Equal(t, "old 1\nol", string(tl.head), "up to the fingerprint length")
	tl.grow([]byte("x"), 20) // not contiguous: ignored
	require.Equal(t, "old 1\nol", string(tl.head))
	require.True(t, tl.headSame())
	require.NoError(t, os.WriteFile(path, []byte("new 1\nnew 2\nnew 3\n"), 0o644))
	require.False(t, tl.headSame(), "rewritten")
}

// TestHugeLineMemoryBounded: a followed file gets one line of 1 GiB
// (TAILER_HUGE_LINE_MIB) without a newline, then its newline. It is
// shipped as parts of MaxLineBytes, and the Go heap never holds more than
// a few times MaxLineBytes plus fixed buffers: the tailer reads the file
// itself, with a bounded buffer, not through nxadm/tail (which holds a
// whole line, and copies of it, while following).
func TestHugeLineMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 1 GiB line")
	}
	mib := 1024
	if v := os.Getenv("TAILER_HUGE_LINE_MIB"); v != "" {
		_, err := fmt.Sscan(v, &mib)
		require.NoError(t, err, "TAILER_HUGE_LINE_MIB=%q", v)
	}
	const maxLine = 1 << 20
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header())
	f, err := os.Open(path)
	require.NoError(t, err)
	id, err := fileid.Of(f, fpBytes, false)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	tl, err := New(Config{Path: path, Identity: id, FingerprintBytes: fpBytes, MaxLineBytes: maxLine,
		CheckInterval: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)

	var parts, bytesSeen, lastParts atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tl.Run(ctx, func(l Line) error {
			if l.Part > 0 {
				parts.Add(1)
				bytesSeen.Add(int64(len(l.Data)))
				if l.Last {
					lastParts.Add(1)
				}
			}
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 5*time.Second, "the header read", func() bool { return tl.Offset() == int64(len(header())) })

	runtime.GC()
	base := heapBytes()
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			peak.Store(max(peak.Load(), heapBytes()))
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	w, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	// The first 64 MiB written, the rest appended as a hole (zero bytes,
	// no newline: a binary file a glob matched), so that a line of a GiB
	// costs the test no GiB of disk.
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for range min(mib, 64) {
		_, err := w.Write(chunk)
		require.NoError(t, err)
	}
	total := int64(mib) << 20
	require.NoError(t, w.Truncate(int64(len(header()))+total))
	testenv.WaitFor(t, 2*time.Minute, "every full part but the last", func() bool { return bytesSeen.Load() == total-maxLine })
	_, err = w.Write([]byte("\n"))
	require.NoError(t, err)
	require.NoError(t, w.Close())
	testenv.WaitFor(t, 30*time.Second, "the last part", func() bool { return lastParts.Load() == 1 })
	close(stopSampling)
	<-sampled

	require.Equal(t, total, bytesSeen.Load(), "every byte of the line shipped")
	require.Equal(t, int64(mib), parts.Load(), "parts of MaxLineBytes")
	require.Equal(t, total+int64(len(header()))+1, tl.Offset())
	grew := int64(peak.Load()) - int64(base)
	t.Logf("a %d MiB line: peak Go heap %d MiB above the %d MiB before it (MaxLineBytes %d MiB)", mib, grew>>20, base>>20, maxLine>>20)
	bound := int64(4*maxLine + 16<<20)
	require.Less(t, grew, bound, "the heap grew by %d MiB for a %d MiB line; bound %d MiB", grew>>20, mib, bound>>20)
}

// heapBytes is the Go heap's live and not yet swept objects, in bytes.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestNotifiedWithoutTheCheck: with the safety-net check an hour away,
// appended lines still arrive, in both modes: nxadm/tail's notification
// (an inotify watch, or a stat poll, of the tailer's own descriptor) wakes
// the tailer. Two tailers of two files also never share a watch.
func TestNotifiedWithoutTheCheck(t *testing.T) {
	for _, poll := range []bool{false, true} {
		t.Run(fmt.Sprintf("poll=%v", poll), func(t *testing.T) {
			dir := t.TempDir()
			var runs []*run
			for i := range 2 {
				path := filepath.Join(dir, fmt.Sprintf("app%d.log", i))
				appendTo(t, path, header())
				runs = append(runs, startTailer(t, path, 0, func(c *Config) { c.Poll, c.CheckInterval = poll, time.Hour }))
			}
			for i, r := range runs {
				testenv.WaitFor(t, 5*time.Second, "the header", func() bool { return r.col.count() == 1 })
				for j := range 3 {
					appendTo(t, filepath.Join(dir, fmt.Sprintf("app%d.log", i)), fmt.Sprintf("line %d\n", j))
					testenv.WaitFor(t, 5*time.Second, "a notified line", func() bool { return r.col.count() == 2+j })
				}
			}
		})
	}
}

// TestIdleTailerHoldsNoReadBuffer: tailers whose files wait for more hold
// no read buffer (the pool lent none that is not back), in both modes;
// one borrows a buffer only while it reads.
func TestIdleTailerHoldsNoReadBuffer(t *testing.T) {
	for _, poll := range []bool{false, true} {
		t.Run(fmt.Sprintf("poll=%v", poll), func(t *testing.T) {
			dir := t.TempDir()
			var runs []*run
			for i := range 3 {
				path := filepath.Join(dir, fmt.Sprintf("app%d.log", i))
				appendTo(t, path, header()+"a\nb\n")
				runs = append(runs, startTailer(t, path, 0, func(c *Config) { c.Poll = poll }))
			}
			for i, r := range runs {
				testenv.WaitFor(t, 5*time.Second, "the lines", func() bool { return r.col.count() == 3 })
				appendTo(t, filepath.Join(dir, fmt.Sprintf("app%d.log", i)), "c\nno newline yet")
				testenv.WaitFor(t, 5*time.Second, "the new line", func() bool { return r.col.count() == 4 })
			}
			testenv.WaitFor(t, 5*time.Second, "every read buffer back in the pool", func() bool { return ReadBuffersInUse() == 0 })
		})
	}
}

// TestInactiveFileEndsRunAndKeepsItsDescriptor: a current file quiet for
// Inactive ends Run with ErrInactive after every complete line was
// emitted; Keep gets the descriptor (the file can be read on through it,
// even after it is unlinked), and ReadEnd covers an unfinished last line
// that Offset does not.
func TestInactiveFileEndsRunAndKeepsItsDescriptor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"one\n")
	kept := make(chan *os.File, 1)
	r := startTailer(t, path, 0, func(c *Config) {
		c.Inactive = 300 * time.Millisecond
		c.Keep = func(f *os.File) { kept <- f }
	})
	testenv.WaitFor(t, 5*time.Second, "the first lines", func() bool { return r.col.count() == 2 })
	// Writes within Inactive of each other keep it running.
	for i := range 5 {
		appendTo(t, path, fmt.Sprintf("line %d\n", i))
		testenv.WaitFor(t, 5*time.Second, "each line", func() bool { return r.col.count() == 3+i })
		select {
		case err := <-r.done:
			t.Fatalf("run ended while the file grew: %v", err)
		default:
		}
	}
	appendTo(t, path, "partial")
	err := r.wait(t, "the run did not end once the file was quiet")
	require.ErrorIs(t, err, ErrInactive)
	content, _ := os.ReadFile(path)
	require.Equal(t, int64(len(content))-int64(len("partial")), r.tl.Offset(), "every complete line was emitted")
	require.Equal(t, int64(len(content)), r.tl.ReadEnd(), "the partial line was read")
	var f *os.File
	select {
	case f = <-kept:
	default:
		t.Fatal("Keep did not get the descriptor")
	}
	defer f.Close()
	require.NoError(t, os.Remove(path))
	buf := make([]byte, len(content))
	n, err := f.ReadAt(buf, 0)
	require.Equal(t, len(content), n, "the kept descriptor still reads the file: %v", err)
}

// TestAtEndParksAtOnce: AtEnd is asked each time the current file was
// read to its end; its true ends Run with ErrInactive at once, every
// complete line emitted and the descriptor kept, but not while a last
// line without newline waits for its newline or PartialTimeout.
func TestAtEndParksAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"one\npartial")
	var (
		calls    atomic.Int32
		park     atomic.Bool
		modified atomic.Int64
	)
	kept := make(chan *os.File, 1)
	r := startTailer(t, path, 0, func(c *Config) {
		c.AtEnd = func(m time.Time) bool { calls.Add(1); modified.Store(m.UnixNano()); return park.Load() }
		c.Keep = func(f *os.File) { kept <- f }
	})
	testenv.WaitFor(t, 5*time.Second, "the first lines and a call at the end", func() bool {
		return r.col.count() == 2 && calls.Load() > 0
	})
	fi, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, fi.ModTime().UnixNano(), modified.Load(), "AtEnd is told when the file was last modified")
	park.Store(true)
	// The partial line keeps the file followed: AtEnd is asked again at
	// the next check, and the run goes on.
	at := calls.Load()
	testenv.WaitFor(t, 10*time.Second, "another call at the end", func() bool { return calls.Load() > at })
	select {
	case err := <-r.done:
		t.Fatalf("run ended with a partial line pending: %v", err)
	default:
	}
	appendTo(t, path, " line\n")
	err = r.wait(t, "the run did not park once the line was complete")
	require.ErrorIs(t, err, ErrInactive)
	content, _ := os.ReadFile(path)
	require.Equal(t, int64(len(content)), r.tl.Offset(), "every line was emitted")
	require.Equal(t, 3, r.col.count())
	select {
	case f := <-kept:
		f.Close()
	default:
		t.Fatal("Keep did not get the descriptor")
	}
}

// TestAtEndOfARotatedFile: a rotated file read to its end is reported to
// AtEnd too (its caller's resources can go to other files), but never
// parked: it is read on until RotatedIdle and finished.
func TestAtEndOfARotatedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendTo(t, path, header()+"one\n")
	var calls atomic.Int32
	r := startTailer(t, path, 0, func(c *Config) {
		c.Rotated = true
		c.AtEnd = func(time.Time) bool { calls.Add(1); return true }
	})
	err := r.wait(t, "the rotated file was not finished")
	require.ErrorIs(t, err, ErrFinished)
	require.Equal(t, 2, r.col.count())
	require.Positive(t, calls.Load(), "AtEnd was told the file was read to its end")
}
