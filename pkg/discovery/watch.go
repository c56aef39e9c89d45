package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/fsnotify/fsnotify"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// MaxWatchedDirs bounds the directories one Watcher watches (inotify
// watches are a per-user kernel resource); past it, files in the other
// directories are found by the periodic scans only.
const MaxWatchedDirs = 4096

// Found is a file that a directory event revealed: identified, and opened
// at once, so that it can be read even if it is renamed away or deleted
// before anyone gets to it. The receiver owns FD.
type Found struct {
	Topic string
	File  protocol.SeenFile
	FD    *os.File
}

// Watcher turns directory events (inotify) into Found files, within
// microseconds of a file's creation or first write: a file that lives only
// milliseconds under a name the globs match (fast rotation) is still
// caught, which no scan interval can promise.
//
// Invariants:
//   - It watches the directories the topics' globs can match in (at most
//     MaxWatchedDirs), under the allowed roots only.
//   - A path is identified once per file: after a create or rename at that
//     path, at its first event that identifies it (a short file on a
//     shared topic waits for quiet: see SharedQuiet).
//   - It only adds to what scans find; a lost event (queue overflow) asks
//     for a scan.
type Watcher struct {
	s   *Scanner
	log *slog.Logger
	fsw *fsnotify.Watcher

	// topics is replaced whole by SetTopics, never modified: Run reads it
	// without a lock while found may block.
	topics atomic.Pointer[topicSet]

	mu      sync.Mutex
	dirs    map[string]bool // watched now
	stopped bool            // Run returned: no event reaches the scanner's cache

	// Run's goroutine only.
	known map[string]bool // paths identified since their last create
	// unmatched holds paths no topic's globs match, with the topic set they
	// were checked against: writes to them (a busy log beside the topic's
	// files) cost a map lookup, until the topics change or the name is
	// created again.
	unmatched map[string]*topicSet
	// renamedFrom is the path of the last event if it was the old name of a
	// rename: inotify queues a same-directory rename as two consecutive
	// events (old name, then new name), so a create right after it is that
	// file under its new name. It is identified there even if the old name
	// was: what was identified under the old name may have been a later
	// file, when this goroutine lags behind the events.
	renamedFrom string
}

// NewWatcher returns a watcher over s's roots. It fails where inotify is
// unavailable or its instance limit is reached.
func (s *Scanner) NewWatcher(log *slog.Logger) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("discovery: directory watcher: %w", err)
	}
	w := &Watcher{s: s, log: log, fsw: fsw, dirs: map[string]bool{}, known: map[string]bool{}, unmatched: map[string]*topicSet{}}
	w.topics.Store(&topicSet{})
	return w, nil
}

// SetTopics replaces the topics the watcher serves (valid, accepted ones)
// and updates the watched directories to those their globs can match in
// now. Call it again as directories appear (the scans do).
func (w *Watcher) SetTopics(ts map[string]topics.Config) {
	want := map[string]bool{}
	for _, cfg := range ts {
		for _, d := range w.globDirs(cfg) {
			if len(want) >= MaxWatchedDirs {
				break
			}
			want[d] = true
		}
	}
	// The scans call this every time; the same topics keep the same set,
	// so that unmatched stays valid until they change.
	if !reflect.DeepEqual(w.topics.Load().configs, ts) {
		w.topics.Store(&topicSet{configs: maps.Clone(ts), names: slices.Sorted(maps.Keys(ts))})
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for d := range w.dirs {
		if !want[d] {
			_ = w.fsw.Remove(d) // fails for a directory deleted meanwhile: fine
			delete(w.dirs, d)
		}
	}
	for _, d := range slices.Sorted(maps.Keys(want)) {
		if w.dirs[d] {
			continue
		}
		if err := w.fsw.Add(d); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				w.log.Warn("cannot watch directory; its new files are found by the periodic scans", "dir", d, "err", err)
			}
			continue
		}
		w.dirs[d] = true
	}
	if !w.stopped {
		w.s.ids.watch(maps.Clone(w.dirs))
	}
}

// Dirs returns the watched directories, sorted.
func (w *Watcher) Dirs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(maps.Keys(w.dirs))
}

// globDirs lists the existing directories cfg's globs can match files in.
func (w *Watcher) globDirs(cfg topics.Config) []string {
	var out []string
	for _, p := range cfg.Paths {
		base, pattern := doublestar.SplitPattern(p)
		if !w.s.allowed(base) {
			continue
		}
		if !strings.Contains(pattern, "/") {
			out = append(out, filepath.Clean(base))
			continue
		}
		dirs, err := doublestar.FilepathGlob(filepath.Dir(p), doublestar.WithNoFollow())
		if err != nil {
			continue
		}
		if strings.Contains(filepath.Dir(p), "**") {
			dirs = append(dirs, filepath.Clean(base)) // ** matches no directory too
		}
		for _, d := range dirs {
			if fi, err := os.Stat(d); err == nil && fi.IsDir() && w.s.allowed(d) {
				out = append(out, filepath.Clean(d))
			}
		}
	}
	return out
}

// Run delivers Found files until ctx ends or found returns false. rescan
// is called when events were lost (the kernel queue overflowed). changed,
// if set, is called with the path of every write, create, rename and
// delete in the watched directories, before anything else is done with the
// event (so it must not block): what is known of a file at that path may
// be stale. It closes the watcher when it returns.
func (w *Watcher) Run(ctx context.Context, found func(Found) bool, rescan func(), changed func(path string)) error {
	defer w.fsw.Close()
	defer func() {
		w.mu.Lock()
		w.stopped = true
		w.s.ids.watch(nil)
		w.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return errors.New("discovery: directory watcher closed")
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				w.log.Warn("directory events lost (queue overflow); scanning")
				w.s.ids.distrust()
				clear(w.known)
				clear(w.unmatched)
				rescan()
				continue
			}
			w.log.Warn("directory watcher error", "err", err)
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return errors.New("discovery: directory watcher closed")
			}
			w.s.ids.invalidate(ev.Name) // a chmod too: it may make the file unreadable
			if changed != nil && ev.Op&^fsnotify.Chmod != 0 {
				changed(ev.Name)
			}
			if !w.handle(ev, found) {
				return ctx.Err()
			}
		}
	}
}

// handle identifies the file an event names, for every topic whose globs
// match it. It returns false when found did.
func (w *Watcher) handle(ev fsnotify.Event, found func(Found) bool) bool {
	path := ev.Name
	from := w.renamedFrom
	w.renamedFrom = ""
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		if ev.Has(fsnotify.Rename) {
			w.renamedFrom = path
		}
		delete(w.known, path) // the name is free; what comes next is another file
		delete(w.unmatched, path)
		return true
	}
	if ev.Has(fsnotify.Create) {
		delete(w.known, path)
		delete(w.unmatched, path)
	}
	if from != "" && ev.Has(fsnotify.Create) && filepath.Dir(from) == filepath.Dir(path) && !w.known[path] {
		// A file renamed before it was identified under the name the
		// globs match (app.log -> app.log.1 while this goroutine lagged):
		// catch it under its new name.
		if !w.identify(path, from, found) {
			return false
		}
	}
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) {
		return true
	}
	// A write to a path identified since its creation changes nothing: any
	// other file at that path would have come with a create or rename.
	if w.known[path] || w.unmatched[path] == w.topics.Load() {
		return true
	}
	return w.identify(path, path, found)
}

// identify opens the file at path for every topic whose globs match name
// (path itself, or the name it had before a rename). It returns false when
// found did.
func (w *Watcher) identify(path, name string, found func(Found) bool) bool {
	ts := w.topics.Load()
	matched := false
	for _, topic := range ts.names {
		cfg := ts.configs[topic]
		if !w.s.Matches(cfg, name) {
			continue
		}
		matched = true
		// Identified as a scan would, with the descriptor kept open: a
		// file renamed away or deleted a moment later can still be read
		// through it.
		f, fd, _, _ := w.s.open(topic, cfg, path)
		if fd == nil {
			continue // not identified yet, or unreadable (the scans report it)
		}
		if path == name {
			w.known[path] = true
		}
		if !found(Found{Topic: topic, File: *f, FD: fd}) {
			fd.Close()
			return false
		}
	}
	if !matched && path == name {
		w.unmatched[path] = ts
	}
	return true
}

// topicSet is the topics a watcher serves, with their names sorted.
type topicSet struct {
	configs map[string]topics.Config
	names   []string
}
