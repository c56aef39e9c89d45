// Package discovery finds, on one host, the files a topic's globs match:
// by scans (Scanner.Scan), and the moment they appear (Watcher, over
// inotify), opened at once so that a file renamed away or deleted a moment
// later can still be read.
//
// Invariants:
//   - Nothing outside the allowed roots (--allow-path) is ever opened. A
//     topic whose globs reach outside them is refused as a whole, with an
//     error naming the glob and the roots; a file that only resolves outside
//     them through a symlink is skipped and reported.
//   - Only regular files are reported; a file is reported with its identity
//     (pkg/fileid), and a file that cannot be opened or read is reported as
//     a problem, never silently skipped.
//   - An empty file is not reported as a file (nothing to ship yet), only
//     counted in one problem of kind KindEmpty per topic. A file shorter
//     than the fingerprint is identified at once on a local topic, and once it is SharedQuiet old on a shared one (so that every
//     member hashes the same bytes); until then it is reported as a
//     problem of kind KindUnidentified. The scanner remembers such a
//     file's partial identity and gives it again while the file grows, so
//     its key does not change (see short.go).
//   - A scan's result is sorted by path and is a pure function of the file
//     system and the inputs.
//   - The watcher only adds to what scans find; see Watcher for its own.
package discovery

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bmatcuk/doublestar/v4"

	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// Problem kinds reported by a scan.
const (
	KindRefused    = "topic-refused"
	KindUnreadable = "unreadable"
	KindOutside    = "outside-allowed-roots"
	// KindUnidentified: a short file on a shared topic, still being
	// written (see SharedQuiet).
	KindUnidentified = "unidentified"
	// KindEmpty: a topic's empty files, one problem per topic naming a
	// few: nothing to ship until they are written.
	KindEmpty = "empty"
)

// ErrOutsideRoots marks a topic refused for reaching outside the roots.
var ErrOutsideRoots = errors.New("discovery: path outside the allowed roots")

// Scanner evaluates topic globs under a set of allowed roots.
type Scanner struct {
	roots            []string
	agent            string
	fingerprintBytes int
	now              func() time.Time
	short            shortFiles
	ids              idCache
	listings         listings
	opened           atomic.Int64 // files opened to be identified, for tests
	listed           atomic.Int64 // directories listed for one-directory globs, for tests
}

// NewScanner returns a scanner confined to roots (absolute directories).
// agent is this host's agent id, part of local topics' file keys.
func NewScanner(roots []string, agent string, fingerprintBytes int) (*Scanner, error) {
	if len(roots) == 0 {
		return nil, fmt.Errorf("discovery: at least one allowed root is required")
	}
	var clean []string
	for _, r := range roots {
		if !filepath.IsAbs(r) {
			return nil, fmt.Errorf("discovery: allowed root %q is not an absolute path", r)
		}
		clean = append(clean, filepath.Clean(r))
	}
	if fingerprintBytes <= 0 {
		return nil, fmt.Errorf("discovery: fingerprint size %d must be positive", fingerprintBytes)
	}
	return &Scanner{roots: clean, agent: agent, fingerprintBytes: fingerprintBytes, now: time.Now,
		short: shortFiles{ids: map[inodeRef]shortFile{}}, ids: newIDCache()}, nil
}

// Result is what one scan of one topic found.
type Result struct {
	// Refused is set when the topic is refused on this host; then Files
	// is empty.
	Refused  error
	Files    []protocol.SeenFile
	Problems []protocol.Problem
	// Unidentified counts files not identified yet (see SharedQuiet); each
	// is also a problem of kind KindUnidentified.
	Unidentified int
	// Empty counts empty files (not reported until written); a problem of
	// kind KindEmpty names the first few.
	Empty int
}

// Scan evaluates topic name's config on this host.
func (s *Scanner) Scan(name string, cfg topics.Config) Result {
	var res Result
	for _, p := range cfg.Paths {
		base, _ := doublestar.SplitPattern(p)
		if !s.allowed(base) {
			res.Refused = fmt.Errorf("%w: topic %s glob %q lies outside %v (see --allow-path)", ErrOutsideRoots, name, p, s.roots)
			res.Problems = append(res.Problems, protocol.Problem{Topic: name, Kind: KindRefused, Error: res.Refused.Error()})
			return res
		}
	}
	// seen are the paths matched, when a path can be matched twice (by
	// two globs, or a glob over several directories): one glob within one
	// directory matches each entry once, and a scan of ten thousand files
	// need not build a set of them.
	var seen map[string]bool
	var empties []string
	for _, p := range cfg.Paths {
		matches, unique, err := s.glob(p)
		if err != nil {
			res.Problems = append(res.Problems, protocol.Problem{Topic: name, Kind: KindUnreadable,
				Error: fmt.Sprintf("glob %q: %v", p, err)})
			continue
		}
		if seen == nil && (len(cfg.Paths) > 1 || !unique) {
			seen = map[string]bool{}
		}
		res.Files = slices.Grow(res.Files, len(matches))
		for _, m := range matches {
			if seen[m] || s.excluded(cfg.Exclude, m) {
				continue
			}
			if seen != nil {
				seen[m] = true
			}
			if f, ok := s.cached(cfg, m); ok {
				res.Files = append(res.Files, f)
				continue
			}
			f, problem, ok := s.inspect(name, cfg, m)
			switch {
			case problem != nil && problem.Kind == KindEmpty:
				if res.Empty++; len(empties) < maxEmptyNamed {
					empties = append(empties, m)
				}
			case problem != nil:
				res.Problems = append(res.Problems, *problem)
			case !ok:
				res.Unidentified++
				res.Problems = append(res.Problems, protocol.Problem{Topic: name, Path: m, Kind: KindUnidentified,
					Error: fmt.Sprintf("shorter than %d bytes and written in the last %s: on a shared topic it is identified, and shipped, once it is that long or that quiet",
						s.fingerprintBytes, SharedQuiet)})
			case f != nil:
				res.Files = append(res.Files, *f)
			}
		}
	}
	if res.Empty > 0 {
		res.Problems = append(res.Problems, protocol.Problem{Topic: name, Kind: KindEmpty,
			Error: fmt.Sprintf("%d empty files, shipped once written: %s", res.Empty, strings.Join(empties, ", "))})
	}
	slices.SortFunc(res.Files, func(a, b protocol.SeenFile) int { return strings.Compare(a.Path, b.Path) })
	return res
}

// inspect stats and fingerprints one match that the cache does not know
// (see cached). It returns (nil, nil, true) for a file deliberately
// skipped (not regular, too old), (nil, nil, false) for one not identified
// yet.
func (s *Scanner) inspect(topic string, cfg topics.Config, path string) (*protocol.SeenFile, *protocol.Problem, bool) {
	f, fd, problem, ok := s.open(topic, cfg, path)
	if fd != nil {
		fd.Close()
	}
	return f, problem, ok
}

// Matches reports whether one of cfg's globs, and none of its exclusions,
// matches path.
func (s *Scanner) Matches(cfg topics.Config, path string) bool {
	if s.excluded(cfg.Exclude, path) {
		return false
	}
	for _, p := range cfg.Paths {
		if ok, _ := doublestar.PathMatch(p, path); ok {
			return true
		}
	}
	return false
}

// open is inspect keeping the descriptor: it is returned (open) only with
// an identified file.
func (s *Scanner) open(topic string, cfg topics.Config, path string) (*protocol.SeenFile, *os.File, *protocol.Problem, bool) {
	problem := func(kind string, err error) (*protocol.SeenFile, *os.File, *protocol.Problem, bool) {
		return nil, nil, &protocol.Problem{Topic: topic, Path: path, Kind: kind, Error: err.Error()}, true
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, true // gone between the glob and now
		}
		return problem(KindUnreadable, err)
	}
	if !s.allowed(real) {
		return problem(KindOutside, fmt.Errorf("%s resolves to %s, outside %v", path, real, s.roots))
	}
	fi, err := os.Stat(real)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, true
		}
		return problem(KindUnreadable, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, nil, true
	}
	if cfg.IgnoreOlder > 0 && s.now().Sub(fi.ModTime()) > cfg.IgnoreOlder.Std() {
		return nil, nil, nil, true
	}
	f, err := os.Open(real)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, nil, true
		}
		return problem(KindUnreadable, err)
	}
	s.opened.Add(1)
	before, statErr := f.Stat() // for the cache: taken before the first bytes are read
	id, ok, err := s.identify(f, cfg.Shared)
	switch {
	case err != nil:
		f.Close()
		return problem(KindUnreadable, err)
	case id.Partial && id.Bytes == 0:
		// Empty: nothing to ship yet, and its first write (usually a
		// whole line, often past the fingerprint) identifies it better:
		// an identity of no bytes is one only this agent's memory could
		// give again once the file grew. Scan counts it.
		f.Close()
		return nil, nil, &protocol.Problem{Topic: topic, Path: path, Kind: KindEmpty}, true
	case !ok:
		f.Close()
		return nil, nil, nil, false
	}
	// The size of the descriptor's file, not of the path's: the path may
	// name another file by now.
	size := fi.Size()
	if st, err := f.Stat(); err == nil {
		size = st.Size()
	}
	seen := s.seenFile(path, size, id, cfg.Shared)
	if statErr == nil && real == path {
		s.remember(path, before, id, seen.Key, cfg.Shared)
	}
	return seen, f, nil, true
}

func (s *Scanner) seenFile(path string, size int64, id protocol.FileIdentity, shared bool) *protocol.SeenFile {
	return &protocol.SeenFile{Key: fileid.Key(id, shared, s.agent), Path: path, Size: size, Identity: id}
}

// maxEmptyNamed is how many empty files a scan names in its problem.
const maxEmptyNamed = 5

func (s *Scanner) allowed(path string) bool {
	path = filepath.Clean(path)
	for _, r := range s.roots {
		if path == r || r == "/" || strings.HasPrefix(path, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

func (s *Scanner) excluded(patterns []string, path string) bool {
	for _, p := range patterns {
		target := filepath.Base(path)
		if filepath.IsAbs(p) {
			target = path
		}
		if ok, _ := doublestar.PathMatch(p, target); ok {
			return true
		}
	}
	return false
}
