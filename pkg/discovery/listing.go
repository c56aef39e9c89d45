package discovery

import (
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bmatcuk/doublestar/v4"
)

// listings caches the matches of globs confined to one directory
// (/var/log/app/*.log, not /var/log/**/*.log), by the directory's inode,
// mtime and ctime: a directory whose entries did not change (no file
// created, deleted or renamed in it) has the same matches, so a scan of
// ten thousand quiet files need not list and match them again. A
// directory's times have the kernel's coarse clock (milliseconds): a
// listing is kept only if the directory had not changed for racyWindow
// when it was made, so a change in the same tick as the listing cannot
// hide behind an unchanged mtime.
type listings struct {
	mu sync.Mutex
	m  map[string]listing // by glob
}

type listing struct {
	dev, ino     uint64
	mtime, ctime syscall.Timespec
	matches      []string
}

// racyWindow is how long a directory must have been unchanged for its
// listing to be kept (a variable for tests).
var racyWindow = time.Second

// glob returns the regular files p matches (doublestar, no symlinks
// followed), from the cache when p's directory did not change since, and
// whether each is matched once: p is a pattern of one directory's entries
// without alternatives (a glob over several directories may reach a file
// by two ways, {a,a}/*, and alternatives can match a name twice).
// The result is shared: callers must not modify it.
func (s *Scanner) glob(p string) (_ []string, unique bool, _ error) {
	list := func() ([]string, error) {
		return doublestar.FilepathGlob(p, doublestar.WithFilesOnly(), doublestar.WithNoFollow())
	}
	base, pattern := doublestar.SplitPattern(p)
	if strings.Contains(pattern, "/") || strings.Contains(pattern, "**") {
		// Spans directories (dir/** too: a file created in one of its
		// subdirectories leaves dir's own times as they were).
		matches, err := list()
		return matches, false, err
	}
	unique = !strings.Contains(pattern, "{")
	fi, err := os.Stat(base)
	if err != nil {
		matches, err := list()
		return matches, unique, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		matches, err := list()
		return matches, unique, err
	}
	c := &s.listings
	c.mu.Lock()
	e, ok := c.m[p]
	c.mu.Unlock()
	if ok && e.dev == uint64(st.Dev) && e.ino == st.Ino && e.mtime == st.Mtim && e.ctime == st.Ctim { //nolint:unconvert // Dev is not uint64 everywhere
		return e.matches, unique, nil
	}
	listedAt := time.Now()
	s.listed.Add(1)
	matches, err := list()
	if err != nil {
		return nil, unique, err
	}
	if listedAt.Sub(time.Unix(st.Mtim.Unix())) > racyWindow && listedAt.Sub(time.Unix(st.Ctim.Unix())) > racyWindow {
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]listing{}
		}
		c.m[p] = listing{dev: uint64(st.Dev), ino: st.Ino, mtime: st.Mtim, ctime: st.Ctim, matches: matches} //nolint:unconvert
		c.mu.Unlock()
	}
	return matches, unique, nil
}
