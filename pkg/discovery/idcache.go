package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// idCache spares a scan the open and the fingerprint read of a file that
// has not changed since the last scan: a path whose lstat shows the same
// regular file (device, inode) with the same size, mtime and ctime as when
// it was identified has the same first bytes, so the same identity. The
// kernel sets ctime on every write and truncation, and nobody can set it
// back. A file that changed, a symlink, and a short file (whose partial
// identity the scanner's memory keeps, short.go) take the full path:
// resolve, stat, open, read.
//
// At 10,000 quiet files, a scan every 10 s was 80,000 system calls (the
// symlink walk of every path, stat, open, read, fstat, close); with the
// cache it is one lstat per file.
//
// Where the directory watcher watches a file's directory, every write,
// rename, delete or chmod of the file drops its entry (invalidate), so an
// entry that an lstat confirmed is trusted without one for up to
// trustFor: a scan of quiet files then makes no system call per file but
// the directory listing. The lstat every trustFor catches what inotify
// cannot see (a write through a hard link in another directory). Shared
// topics (network volumes: inotify misses other hosts' writes) always
// lstat.
type idCache struct {
	mu sync.Mutex
	// byPath holds pointers so that a scan marks an entry used without
	// writing the map: a scan of 10,000 quiet files reads it 10,000 times.
	byPath  map[string]*cachedID
	watched map[string]bool // directories the watcher watches now
	swept   time.Time
	maxIdle time.Duration // an entry not used for this long is dropped
}

// trustFor is how long an entry that an lstat confirmed is trusted
// without another, in a watched directory.
const trustFor = time.Minute

type cachedID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
	id           protocol.FileIdentity
	// key is id's file key for a topic shared or not (keyShared): a
	// SHA-256 that a scan of quiet files would otherwise compute again
	// for every file.
	key       string
	keyShared bool
	used      time.Time
	verified  time.Time // last confirmed by an lstat; zero: not yet
}

func newIDCache() idCache {
	return idCache{byPath: map[string]*cachedID{}, maxIdle: 2 * time.Minute}
}

func statOf(fi os.FileInfo) (*syscall.Stat_t, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return st, ok && fi.Mode().IsRegular()
}

// cached returns path's file as the last identification saw it, if path
// is still that regular file, unchanged: trusted without a system call
// (trusted), or confirmed by an lstat (confirmed).
func (s *Scanner) cached(cfg topics.Config, path string) (protocol.SeenFile, bool) {
	e, ok := s.trusted(cfg, path)
	if !ok {
		e, ok = s.confirmed(path)
	}
	if !ok || s.short.has(inodeRef{dev: e.dev, ino: e.ino}, cfg.Shared) {
		return protocol.SeenFile{}, false
	}
	if cfg.IgnoreOlder > 0 && s.now().Sub(time.Unix(e.mtime.Unix())) > cfg.IgnoreOlder.Std() {
		return protocol.SeenFile{}, false // the full path skips it
	}
	if e.keyShared != cfg.Shared {
		return *s.seenFile(path, e.size, e.id, cfg.Shared), true
	}
	return protocol.SeenFile{Key: e.key, Path: path, Size: e.size, Identity: e.id}, true
}

// confirmed returns path's entry if an lstat shows the same regular file,
// unchanged, and marks it confirmed now; a changed file's entry goes.
func (s *Scanner) confirmed(path string) (cachedID, bool) {
	fi, err := os.Lstat(path)
	if err != nil {
		return cachedID{}, false
	}
	st, ok := statOf(fi)
	if !ok {
		return cachedID{}, false
	}
	now := s.now()
	c := &s.ids
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byPath[path]
	if ok && (e.dev != uint64(st.Dev) || e.ino != st.Ino || e.size != st.Size || e.mtime != st.Mtim || e.ctime != st.Ctim) { //nolint:unconvert // Dev is not uint64 everywhere
		delete(c.byPath, path)
		ok = false
	}
	if !ok {
		c.sweepLocked(now)
		return cachedID{}, false
	}
	e.used, e.verified = now, now
	c.sweepLocked(now)
	return *e, true
}

// trusted returns path's entry without a system call, if its directory is
// watched and an lstat confirmed the entry less than trustFor ago. Never
// on a shared topic.
func (s *Scanner) trusted(cfg topics.Config, path string) (cachedID, bool) {
	if cfg.Shared {
		return cachedID{}, false
	}
	now := s.now()
	c := &s.ids
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byPath[path]
	if !ok || e.verified.IsZero() || now.Sub(e.verified) >= trustFor || !c.watched[dirOf(path)] {
		return cachedID{}, false
	}
	e.used = now
	return *e, true
}

// dirOf is filepath.Dir of a clean path (as globs return them) without
// cleaning it again, a third of a trusted lookup's time. An unclean path
// names no watched directory here, and is confirmed by an lstat.
func dirOf(path string) string {
	if i := strings.LastIndexByte(path, filepath.Separator); i > 0 {
		return path[:i]
	}
	return filepath.Dir(path)
}

// invalidate drops path's entry: the directory watcher saw it change.
func (c *idCache) invalidate(path string) {
	c.mu.Lock()
	delete(c.byPath, path)
	c.mu.Unlock()
}

// distrust makes every entry need an lstat again: events were lost.
func (c *idCache) distrust() {
	c.mu.Lock()
	for _, e := range c.byPath {
		e.verified = time.Time{}
	}
	c.mu.Unlock()
}

// watch sets the directories whose events reach invalidate (nil: none,
// the watcher stopped or lost events).
func (c *idCache) watch(dirs map[string]bool) {
	c.mu.Lock()
	c.watched = dirs
	c.mu.Unlock()
}

// remember caches id, the identity of the file whose stat (taken before
// its first bytes were read) is fi, found at path (no symlink on the way),
// and key, its key in a topic shared or not. Only full identities: a
// short file's is the memory's (short.go).
func (s *Scanner) remember(path string, fi os.FileInfo, id protocol.FileIdentity, key string, shared bool) {
	st, ok := statOf(fi)
	if id.Partial || !ok {
		return
	}
	now := s.now()
	c := &s.ids
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byPath[path] = &cachedID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim, id: id, key: key, keyShared: shared, used: now} //nolint:unconvert
	c.sweepLocked(now)
}

// sweepLocked drops, at most once per maxIdle, the entries not used for
// that long: files deleted or renamed away.
func (c *idCache) sweepLocked(now time.Time) {
	if now.Sub(c.swept) < c.maxIdle {
		return
	}
	c.swept = now
	for p, e := range c.byPath {
		if now.Sub(e.used) > c.maxIdle {
			delete(c.byPath, p)
		}
	}
}
