package tailer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/logferry/logferry/internal/ctxwait"
	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/protocol"
)

// Line is one record's worth of a file: a whole line, or one part of a line
// longer than MaxLineBytes.
type Line struct {
	// Start is the byte offset of the first byte of Data in the file.
	Start int64
	// End is where reading resumes after this record: just past the line's
	// newline for a whole line or a last part, just past Data otherwise.
	// A checkpoint at End never repeats or skips a byte.
	End int64
	// Data is the line without its newline. It is valid only until emit
	// returns: the tailer reuses the memory for the next lines, so that
	// reading costs no copy and no allocation per line (the shipper copies
	// the line into its batch anyway). Keep a copy if you keep the line.
	Data []byte
	// Part numbers the parts of a split line from 1; 0 for a whole line.
	Part int
	// Last is set on the last part of a split line (and on whole lines).
	Last bool
	// Truncated is set when the rest of a long line was dropped.
	Truncated bool
	// NoNewline is set on a final line shipped without its newline because
	// the file was rotated away or deleted.
	NoNewline bool
}

// Errors that end Run.
var (
	// ErrFinished: the file was rotated away or deleted and everything in
	// it was read.
	ErrFinished = errors.New("tailer: file rotated away or deleted and read to its end")
	// ErrGone: the file was truncated and rewritten with other content, so
	// its identity no longer exists (the new content is a new file).
	ErrGone = errors.New("tailer: file truncated and rewritten; its identity is gone")
	// ErrMismatch: the path does not hold the file with the expected identity.
	ErrMismatch = errors.New("tailer: path holds a different file")
	// ErrInactive: the file, still current, has not grown for
	// Config.Inactive. Everything in it up to ReadEnd was read; the caller
	// parks it (Keep has its descriptor) and starts a tailer again when it
	// changes.
	ErrInactive = errors.New("tailer: file inactive")

	// errPartialIdle: follow saw a last line without newline idle for
	// PartialTimeout.
	errPartialIdle = errors.New("tailer: partial line idle")
	// errInactive: wait saw the file quiet for Config.Inactive.
	errInactive = errors.New("tailer: inactive")
	// errRewritten: the file's first bytes changed under a read.
	errRewritten = errors.New("tailer: file rewritten under the read")
	// errHeadPending: the file shrank below its fingerprint (truncated,
	// its new first bytes not written yet): whether it is still the same
	// file can be told only once it has them.
	errHeadPending = errors.New("tailer: truncated file not rewritten past its head yet")
)

// Config describes one file to tail.
type Config struct {
	Path string
	// File, when set, is an open descriptor of the file (opened when it was
	// discovered, so a file renamed away or deleted since can still be
	// read). Run uses it instead of opening Path, and closes it (if New
	// fails, the caller still owns it).
	File *os.File
	// Keep, when set, receives the descriptor when Run returns because its
	// context ended or the file is finished (ErrFinished) or inactive
	// (ErrInactive), instead of Run closing it: a run stopped for a while
	// (its agent fenced, its topic paused, its file parked), or one whose
	// last records must be read again (they were dropped unwritten),
	// resumes through the same descriptor, so a file deleted meanwhile is
	// still read.
	Keep     func(*os.File)
	Identity protocol.FileIdentity
	// Rotated: the file has already left the name it was found under (the
	// topic's globs no longer match Path): it is read to its end and
	// finished once idle for RotatedIdle, even while Path still names it.
	Rotated          bool
	FingerprintBytes int
	// Offset is where reading starts (a checkpoint, 0, or the file's size).
	Offset int64
	// MaxLineBytes caps one record; longer lines are split, or truncated
	// when Truncate is set.
	MaxLineBytes int
	Truncate     bool
	// RotatedIdle is how long a rotated-away file must stop growing before
	// the tailer finishes it (its writer may hold it open for a while).
	RotatedIdle time.Duration
	// CheckInterval is how often a followed file is checked for rotation
	// and truncation that the notifier did not report.
	CheckInterval time.Duration
	// PartialTimeout, when positive, ships a last line that has no newline
	// once the file has not grown for this long (flagged NoNewline); bytes
	// appended later start a new line. Zero waits for the newline (or the
	// file's rotation) for ever.
	PartialTimeout time.Duration
	// Inactive, when positive, ends Run with ErrInactive once the file,
	// still current, has not grown for this long: an idle file then costs
	// its caller no goroutine, no watch and no buffer until it changes.
	Inactive time.Duration
	// AtEnd, if set, is called whenever the tailer has read its file to
	// its end and is about to wait for it to grow, with the file's last
	// modification time: the first call tells the caller that the file
	// was read from its offset to its end. For a
	// current file, it returning true ends Run with ErrInactive at once,
	// as if the file had been quiet for Inactive (the caller needs the
	// tailer's goroutine and watch for other files), unless a last line
	// without newline is pending: that one waits for PartialTimeout as
	// usual. A rotated file is never parked: it is read on until
	// RotatedIdle, whatever AtEnd says.
	AtEnd func(modified time.Time) (park bool)
	// Poll makes nxadm/tail poll instead of using inotify.
	Poll   bool
	Logger *slog.Logger
	// OnTruncate is called when the file shrank below the read offset and is
	// read again from 0; lost is how many bytes past the old offset could
	// not have been read (unknown: 0).
	OnTruncate func(oldOffset int64)
	// Flush, if set, is called whenever the tailer has emitted the lines
	// it could read and is about to wait for more, and before Run returns:
	// a sink that gathers lines sends them then. Its error ends Run (and
	// replaces ErrFinished, ErrGone or ErrInactive: a file is not done, or
	// parked, until its lines were handed over).
	Flush func() error
}

// Tailer follows one file by identity.
type Tailer struct {
	cfg    Config
	log    *slog.Logger
	f      *os.File
	head   []byte       // the file's first FingerprintBytes bytes, as opened or read since (see grow)
	buf    []byte       // scratch for headSame (Run's goroutine only)
	offset atomic.Int64 // End of the last emitted line; read by other goroutines
	// readEnd is where the last read stopped: the file's size then, past
	// an unfinished last line. Run's goroutine only (ReadEnd).
	readEnd int64
}

// headSame reports whether the file still starts with the bytes it had
// when the tailer opened it: a copytruncate followed by new content changes
// them, even when the file grows past the read offset again.
func (t *Tailer) headSame() bool {
	if len(t.buf) != len(t.head) {
		t.buf = make([]byte, len(t.head))
	}
	n, _ := t.f.ReadAt(t.buf, 0)
	return n == len(t.buf) && bytes.Equal(t.buf, t.head)
}

// verifiedReader reads the tailer's descriptor and checks, after every
// read, that the file's head is unchanged, so that bytes read from content
// that replaced the file (copytruncate) are never taken for the old
// file's: such a read fails with errRewritten before any line of it is
// emitted.
type verifiedReader struct{ t *Tailer }

func (v verifiedReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := v.t.f.ReadAt(p, off)
	if n > 0 && !v.t.headSame() {
		return 0, errRewritten
	}
	v.t.grow(p[:n], off)
	return n, err
}

// grow extends the head, up to the fingerprint length, with bytes just
// read at off and found to follow an unchanged head. A file opened short,
// or empty, then tells a later rewrite from growth by every byte read of
// its start, not only by those it had when it was opened.
func (t *Tailer) grow(p []byte, off int64) {
	have := int64(len(t.head))
	if have >= int64(t.cfg.FingerprintBytes) || off > have || off+int64(len(p)) <= have {
		return
	}
	end := min(off+int64(len(p)), int64(t.cfg.FingerprintBytes))
	t.head = append(t.head, p[have-off:end-off]...)
}

// New checks cfg; it opens nothing.
func New(cfg Config) (*Tailer, error) {
	switch {
	case cfg.Path == "":
		return nil, errors.New("tailer: no path")
	case cfg.FingerprintBytes <= 0:
		return nil, fmt.Errorf("tailer: fingerprint size %d", cfg.FingerprintBytes)
	case cfg.MaxLineBytes <= 0:
		return nil, fmt.Errorf("tailer: max line bytes %d", cfg.MaxLineBytes)
	case cfg.Offset < 0:
		return nil, fmt.Errorf("tailer: negative offset %d for %s", cfg.Offset, cfg.Path)
	}
	if cfg.RotatedIdle <= 0 {
		cfg.RotatedIdle = 5 * time.Second
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.OnTruncate == nil {
		cfg.OnTruncate = func(int64) {}
	}
	t := &Tailer{cfg: cfg, log: cfg.Logger.With("component", "tailer", "path", cfg.Path)}
	t.offset.Store(cfg.Offset)
	return t, nil
}

// Offset is where reading would resume: the End of the last emitted line.
// Safe to call from any goroutine.
func (t *Tailer) Offset() int64 { return t.offset.Load() }

// ReadEnd is how much of the file had been read when Run returned: its
// size at the last read, past an unfinished last line that Offset does not
// cover. A parked file that is still this long has not changed. Call it
// only after Run returned.
func (t *Tailer) ReadEnd() int64 { return t.readEnd }

// emitter wraps emit so that the offset follows every emitted line.
func (t *Tailer) emitter(emit func(Line) error) func(Line) error {
	return func(l Line) error {
		if err := emit(l); err != nil {
			return err
		}
		t.offset.Store(l.End)
		return nil
	}
}

// Run reads the file from the configured offset and hands every line to
// emit, in file order, until ctx is done (ctx's error), emit fails (its
// error), the file is finished (ErrFinished) or gone (ErrGone).
//
// The tailer keeps its own descriptor of the file for its whole life. It
// reads what is already there with that descriptor, then lets nxadm/tail
// follow appends through the path; whenever nxadm/tail stops (rename,
// delete), or the path no longer holds this file, or the file shrank, the
// tailer goes back to its own descriptor, so a rotated file is always read
// to its end before the tailer lets go of it.
func (t *Tailer) Run(ctx context.Context, emit func(Line) error) error {
	err := t.run(ctx, emit)
	if ferr := t.flush(); ferr != nil && (err == nil || errors.Is(err, ErrFinished) || errors.Is(err, ErrGone) || errors.Is(err, ErrInactive)) {
		return ferr
	}
	return err
}

// flush calls Config.Flush, if set.
func (t *Tailer) flush() error {
	if t.cfg.Flush == nil {
		return nil
	}
	return t.cfg.Flush()
}

func (t *Tailer) run(ctx context.Context, emit func(Line) error) (err error) {
	f := t.cfg.File
	t.cfg.File = nil
	if f == nil {
		f, err = t.open()
	}
	if err != nil {
		return err
	}
	defer func() {
		if t.cfg.Keep != nil && (ctx.Err() != nil || errors.Is(err, ErrFinished) || errors.Is(err, ErrInactive)) {
			t.cfg.Keep(f)
			return
		}
		f.Close()
	}()
	t.f = f
	// A file shorter than the fingerprint has a shorter head: appends
	// leave it as it is, so it still tells a rewrite from growth.
	t.head = make([]byte, t.cfg.FingerprintBytes)
	n, err := f.ReadAt(t.head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: read the head of %s: %v", ErrGone, t.cfg.Path, err)
	}
	t.head = t.head[:n]
	r := newReader(verifiedReader{t: t}, f.Name(), t.cfg.MaxLineBytes, t.cfg.Truncate)
	emit = t.emitter(emit)
	w := &waiter{t: t, check: t.cfg.CheckInterval, grewAt: time.Now()}
	defer w.stopNotifier()
	var idleSince time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := t.checkTruncation(r); errors.Is(err, errHeadPending) {
			// Caught between a truncation and the writes that follow it
			// (notifications are that fast): wait for them.
			if err := w.wait(ctx, 0, false); err != nil {
				return err
			}
			continue
		} else if err != nil {
			return err
		}
		n, err := r.readAvailable(ctx, t.Offset(), emit)
		if errors.Is(err, errRewritten) {
			t.log.Warn("file rewritten (copytruncate?) while reading; its identity is gone", "offset", t.Offset())
			return fmt.Errorf("%w: %s rewritten at offset %d", ErrGone, t.cfg.Path, t.Offset())
		}
		if err != nil {
			return err
		}
		t.readEnd = r.end()
		if err := t.flush(); err != nil {
			return err
		}
		st, modified := t.pathState()
		if st == pathOurs && t.cfg.Rotated {
			st = pathRotated
		}
		if st == pathOurs {
			idleSince = time.Time{}
			if t.cfg.AtEnd != nil && t.cfg.AtEnd(modified) && !r.partial() {
				t.log.Debug("file read to its end; parking it at once", "offset", t.Offset(), "read_end", t.readEnd)
				return ErrInactive
			}
			err := w.wait(ctx, n, r.partial())
			if errors.Is(err, errPartialIdle) {
				// A partial last line waited out its timeout: ship it as
				// it is (readAvailable holds every byte of it by now).
				if err := r.flushPartial(emit); err != nil {
					return err
				}
				continue
			}
			if errors.Is(err, errInactive) {
				t.log.Debug("file inactive; parking it", "offset", t.Offset(), "read_end", t.readEnd)
				return ErrInactive
			}
			if err != nil {
				return err
			}
			continue
		}
		// Rotated away or deleted: no more notifications; drain with our
		// own descriptor until the file stops growing, then ship a final
		// partial line and finish.
		w.stopNotifier()
		if n > 0 || idleSince.IsZero() {
			idleSince = time.Now()
		}
		if st == pathDeleted || time.Since(idleSince) >= t.cfg.RotatedIdle {
			if err := r.flushPartial(emit); err != nil {
				return err
			}
			t.log.Info("file finished", "offset", t.Offset(), "state", st)
			return ErrFinished
		}
		if t.cfg.AtEnd != nil {
			t.cfg.AtEnd(modified) // read to its end; a rotated file is never parked
		}
		if !ctxwait.Sleep(ctx, min(t.cfg.CheckInterval, t.cfg.RotatedIdle/4+time.Millisecond)) {
			return ctx.Err()
		}
	}
}

// open opens the file with the configured identity: at the configured path,
// or, if that path was rotated meanwhile, at a sibling in the same directory
// (rotation renames within a directory: app.log -> app.log.1).
func (t *Tailer) open() (*os.File, error) {
	f, err := t.openIfOurs(t.cfg.Path)
	if err == nil {
		return f, nil
	}
	p, _, found := fileid.FindByInode(filepath.Dir(t.cfg.Path), t.cfg.Identity.Inode)
	if !found || p == t.cfg.Path {
		return nil, err
	}
	f, ferr := t.openIfOurs(p)
	if ferr != nil {
		return nil, err
	}
	// The configured path stays the reference for pathState: it names
	// another file now, so this one is read to its end.
	t.log.Info("file was rotated before it was opened; found it by identity", "now_at", p)
	return f, nil
}

func (t *Tailer) openIfOurs(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	same, err := fileid.Check(f, t.cfg.Identity, t.cfg.FingerprintBytes)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: identify %s: %w", ErrMismatch, path, err)
	}
	if !same {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not the file with inode %d, fingerprint %.12s",
			ErrMismatch, path, t.cfg.Identity.Inode, t.cfg.Identity.Fingerprint)
	}
	return f, nil
}

type pathState int

const (
	pathOurs    pathState = iota // the path still names our file
	pathRotated                  // the path names another file, or nothing, but ours still has links
	pathDeleted                  // our file has no links left
)

func (s pathState) String() string {
	return [...]string{"current", "rotated", "deleted"}[s]
}

// pathState says where the file stands, and when it was last modified
// (zero if its descriptor cannot be stat'ed).
func (t *Tailer) pathState() (pathState, time.Time) {
	ours, err := t.f.Stat()
	var modified time.Time
	if err == nil {
		modified = ours.ModTime()
		if st, ok := ours.Sys().(*syscall.Stat_t); ok && st.Nlink == 0 {
			return pathDeleted, modified
		}
	}
	cur, err := os.Stat(t.cfg.Path)
	if err != nil || ours == nil || !os.SameFile(ours, cur) {
		return pathRotated, modified
	}
	return pathOurs, modified
}

// checkTruncation verifies the file under our descriptor still has our
// identity. Rewritten first bytes mean the identity is gone (ErrGone), even
// if the file grew past the offset again (copytruncate followed by fast
// writes); a file that shrank below the offset with its first bytes intact
// is read again from 0.
func (t *Tailer) checkTruncation(r *reader) error {
	fi, err := t.f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", t.cfg.Path, err)
	}
	offset := t.Offset()
	if fi.Size() < offset && fi.Size() < int64(len(t.head)) {
		return errHeadPending
	}
	// The head too: a short file's identity covers few bytes (none, if it
	// was found empty), the head all those read since.
	if same, err := fileid.Check(t.f, t.cfg.Identity, t.cfg.FingerprintBytes); err != nil || !same || !t.headSame() {
		t.log.Warn("file rewritten; its identity is gone", "offset", offset, "size", fi.Size())
		return fmt.Errorf("%w: %s (offset %d, now %d bytes)", ErrGone, t.cfg.Path, offset, fi.Size())
	}
	if fi.Size() >= offset {
		return nil
	}
	t.log.Warn("file truncated; reading it again from 0", "offset", offset, "size", fi.Size())
	t.cfg.OnTruncate(offset)
	t.offset.Store(0)
	r.reset()
	return nil
}

// reader reads lines from the tailer's own descriptor with positional reads
// (io.SectionReader), so it never shares a file position with anyone.
// Memory stays bounded by max plus the buffer, whatever the line length.
//
// It holds no read buffer between reads: readAvailable borrows one from
// the pool and gives it back before it returns. Only the bytes of an
// unfinished line stay (acc, at most max), and acc is dropped when empty.
type reader struct {
	src        io.ReaderAt
	name       string
	max        int
	truncate   bool
	positioned bool   // pos, acc and accStart describe the read so far
	pos        int64  // offset of the next byte to read
	acc        []byte // bytes of the current line not emitted yet
	accStart   int64  // offset of acc[0]: where the current line (or part) starts
	part       int    // parts of the current line emitted so far
	dropped    bool   // truncate mode: bytes past max of the current line were dropped
}

func newReader(src io.ReaderAt, name string, max int, truncate bool) *reader {
	return &reader{src: src, name: name, max: max, truncate: truncate}
}

// reset forgets the read state; the next readAvailable starts afresh.
func (r *reader) reset() { r.positioned = false }

// end is the offset past the last byte read.
func (r *reader) end() int64 {
	if !r.positioned {
		return r.accStart
	}
	return r.pos
}

// partial reports whether bytes of an unfinished last line were read and
// not emitted yet.
func (r *reader) partial() bool { return r.positioned && r.pos != r.accStart }

// readAvailable emits every complete line from offset to the current end of
// the file and keeps an unfinished last line for later. It returns how many
// bytes it consumed from the file.
func (r *reader) readAvailable(ctx context.Context, offset int64, emit func(Line) error) (int64, error) {
	if !r.positioned || offset != r.accStart {
		r.positioned = true
		r.pos, r.accStart, r.acc, r.part, r.dropped = offset, offset, r.acc[:0], 0, false
	}
	br, err := readBufs.get(ctx, io.NewSectionReader(r.src, r.pos, math.MaxInt64-r.pos))
	if err != nil {
		return 0, err
	}
	defer readBufs.put(br)
	var consumed int64
	for {
		chunk, err := br.ReadSlice('\n')
		r.pos += int64(len(chunk))
		consumed += int64(len(chunk))
		complete := err == nil
		data := chunk
		if complete {
			data = chunk[:len(chunk)-1]
			if len(r.acc) == 0 && r.part == 0 && !r.dropped && len(data) <= r.max {
				// The common case, a whole line in the buffer: emitted
				// from there, not copied.
				if err := emit(Line{Start: r.accStart, End: r.pos, Data: data, Last: true}); err != nil {
					return consumed, err
				}
				r.accStart = r.pos
				continue
			}
		}
		if err := r.accumulate(data, emit); err != nil {
			return consumed, err
		}
		switch {
		case complete:
			l := Line{Start: r.accStart, End: r.pos, Data: r.acc, Last: true, Truncated: r.dropped}
			if r.part > 0 {
				l.Part = r.part + 1
			}
			if err := emit(l); err != nil {
				return consumed, err
			}
			r.acc, r.accStart, r.part, r.dropped = r.acc[:0], r.pos, 0, false
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if len(r.acc) == 0 {
				r.acc = nil // a file waiting for more keeps no line buffer
			}
			return consumed, nil
		default:
			return consumed, fmt.Errorf("read %s at %d: %w", r.name, r.pos, err)
		}
	}
}

// accumulate adds data to the current line, emitting full parts of a long
// line (split mode) or dropping what is past max (truncate mode).
func (r *reader) accumulate(data []byte, emit func(Line) error) error {
	if r.truncate {
		if room := r.max - len(r.acc); len(data) > room {
			r.acc = append(r.acc, data[:max(room, 0)]...)
			r.dropped = true
		} else {
			r.acc = append(r.acc, data...)
		}
		return nil
	}
	r.acc = append(r.acc, data...)
	for len(r.acc) > r.max { // more bytes follow: this part is not the last
		r.part++
		l := Line{Start: r.accStart, End: r.accStart + int64(r.max), Data: r.acc[:r.max:r.max], Part: r.part}
		if err := emit(l); err != nil {
			return err
		}
		r.acc = append(r.acc[:0], r.acc[r.max:]...)
		r.accStart += int64(r.max)
	}
	return nil
}

// flushPartial emits the unfinished last line, if any, as a final line
// flagged NoNewline. Call it right after readAvailable reached the end.
func (r *reader) flushPartial(emit func(Line) error) error {
	if !r.positioned || r.pos == r.accStart {
		return nil
	}
	l := Line{Start: r.accStart, End: r.pos, Data: r.acc, Last: true, Truncated: r.dropped, NoNewline: true}
	if r.part > 0 {
		l.Part = r.part + 1
	}
	if err := emit(l); err != nil {
		return err
	}
	r.acc, r.accStart, r.part, r.dropped = r.acc[:0], r.pos, 0, false
	return nil
}
