package discovery

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/topics"
)

const fp = 16 // small fingerprint so test files stay small

func mk(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func cfg(t *testing.T, js string) topics.Config {
	t.Helper()
	c, err := topics.Decode("t", []byte(js))
	require.NoError(t, err)
	return c
}

func paths(r Result) []string {
	var out []string
	for _, f := range r.Files {
		out = append(out, f.Path)
	}
	return out
}

// A file that several globs match, or alternatives of one glob, is
// reported once: whether a scan sets up a set of the paths it matched
// depends on the globs (one glob within one directory needs none).
func TestScanReportsAFileOnce(t *testing.T) {
	root := t.TempDir()
	long := strings.Repeat("x", 40) + "\n"
	// sab matches s* too: {sub,s*} reaches sub/b.log twice unless a set
	// of the paths matched drops the second.
	for _, p := range []string{"a.log", "app.log", "sub/b.log", "sab/c.txt"} {
		mk(t, filepath.Join(root, p), long+p)
	}
	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	for _, globs := range []string{
		`"` + root + `/*.log","` + root + `/a*.log"`,
		`"` + root + `/{a,a*}.log"`,
		`"` + root + `/{sub,s*}/*.log"`,
	} {
		for range 2 { // listed, then from the cache
			r := s.Scan("t", cfg(t, `{"paths":[`+globs+`]}`))
			require.NoError(t, r.Refused)
			got := paths(r)
			seen := map[string]bool{}
			for _, p := range got {
				require.False(t, seen[p], "%s reported twice for %s: %v", p, globs, got)
				seen[p] = true
			}
		}
	}
}

func TestScanGlobsAndExcludes(t *testing.T) {
	root := t.TempDir()
	long := strings.Repeat("x", 40) + "\n"
	for _, p := range []string{"a.log", "b.log", "b.log.gz", "sub/c.log", "sub/deep/d.log", "secret/e.log", "other.txt"} {
		mk(t, filepath.Join(root, p), long+p)
	}
	mk(t, filepath.Join(root, "short.log"), "tiny")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "dir.log"), 0o755))

	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	r := s.Scan("t", cfg(t, `{"paths":["`+root+`/**/*.log*"],"exclude":["*.gz","`+root+`/secret/**"]}`))
	require.NoError(t, r.Refused)
	require.Empty(t, r.Problems)
	require.Equal(t, []string{
		filepath.Join(root, "a.log"), filepath.Join(root, "b.log"), filepath.Join(root, "short.log"),
		filepath.Join(root, "sub/c.log"), filepath.Join(root, "sub/deep/d.log"),
	}, paths(r))
	require.Zero(t, r.Unidentified, "a short file on a local topic is identified at once")
	for _, f := range r.Files {
		if f.Identity.Partial {
			require.Equal(t, filepath.Join(root, "short.log"), f.Path)
			continue
		}
		require.Len(t, f.Key, 32)
		require.Positive(t, f.Identity.Inode)
		require.Equal(t, int64(len(long)+len(strings.TrimPrefix(f.Path, root+"/"))), f.Size)
	}
	// Keys of a local topic carry the agent; of a shared one they don't.
	s2, _ := NewScanner([]string{root}, "h2", fp)
	local1 := s.Scan("t", cfg(t, `{"paths":["`+root+`/a.log"]}`))
	local2 := s2.Scan("t", cfg(t, `{"paths":["`+root+`/a.log"]}`))
	require.NotEqual(t, local1.Files[0].Key, local2.Files[0].Key)
	sh1 := s.Scan("t", cfg(t, `{"paths":["`+root+`/a.log"],"shared":true}`))
	sh2 := s2.Scan("t", cfg(t, `{"paths":["`+root+`/a.log"],"shared":true}`))
	require.Equal(t, sh1.Files[0].Key, sh2.Files[0].Key)
}

func TestScanRefusesOutsideRoots(t *testing.T) {
	root, other := t.TempDir(), t.TempDir()
	mk(t, filepath.Join(other, "x.log"), strings.Repeat("y", 40))
	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	r := s.Scan("web", cfg(t, `{"paths":["`+root+`/*.log","`+other+`/*.log"]}`))
	require.ErrorIs(t, r.Refused, ErrOutsideRoots)
	require.Contains(t, r.Refused.Error(), other+"/*.log")
	require.Empty(t, r.Files)
	require.Len(t, r.Problems, 1)
	require.Equal(t, KindRefused, r.Problems[0].Kind)

	// A root that only shares a string prefix is not inside it.
	r = s.Scan("web", cfg(t, `{"paths":["`+root+`x/*.log"]}`))
	require.ErrorIs(t, r.Refused, ErrOutsideRoots)
}

func TestScanSymlinkEscapeReported(t *testing.T) {
	root, other := t.TempDir(), t.TempDir()
	target := filepath.Join(other, "secret.log")
	mk(t, target, strings.Repeat("z", 40))
	require.NoError(t, os.Symlink(target, filepath.Join(root, "link.log")))
	s, _ := NewScanner([]string{root}, "h1", fp)
	r := s.Scan("t", cfg(t, `{"paths":["`+root+`/*.log"]}`))
	require.Empty(t, r.Files)
	require.Len(t, r.Problems, 1)
	require.Equal(t, KindOutside, r.Problems[0].Kind)
	require.Contains(t, r.Problems[0].Error, target)
}

func TestScanIgnoreOlder(t *testing.T) {
	root := t.TempDir()
	mk(t, filepath.Join(root, "old.log"), strings.Repeat("o", 40))
	mk(t, filepath.Join(root, "new.log"), strings.Repeat("n", 40))
	old := time.Now().Add(-48 * time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(root, "old.log"), old, old))
	s, _ := NewScanner([]string{root}, "h1", fp)
	r := s.Scan("t", cfg(t, `{"paths":["`+root+`/*.log"],"ignore_older":"24h"}`))
	require.Equal(t, []string{filepath.Join(root, "new.log")}, paths(r))
	r = s.Scan("t", cfg(t, `{"paths":["`+root+`/*.log"]}`))
	require.Len(t, r.Files, 2)
}

func TestNewScannerValidates(t *testing.T) {
	_, err := NewScanner(nil, "h", fp)
	require.Error(t, err)
	_, err = NewScanner([]string{"var/log"}, "h", fp)
	require.ErrorContains(t, err, `"var/log"`)
	_, err = NewScanner([]string{"/var/log"}, "h", 0)
	require.Error(t, err)
}

// A file shorter than the fingerprint is shipped like any other: on a
// local topic it is identified at once and keeps its key as it grows; on
// a shared one every member waits until it is quiet, so all of them hash
// the same bytes and agree on its key.
func TestShortFilesKeepTheirKeys(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "cron.log")
	mk(t, path, "")
	now := time.Now()
	clock := func() time.Time { return now }
	scanner := func(agent string) *Scanner {
		s, err := NewScanner([]string{root}, agent, fp)
		require.NoError(t, err)
		s.now = clock
		return s
	}
	local := cfg(t, `{"paths":["`+root+`/*.log"]}`)
	h1 := scanner("h1")
	res := h1.Scan("t", local)
	require.Empty(t, res.Files, "an empty file: nothing to ship yet")
	require.Equal(t, 1, res.Empty)
	require.Len(t, res.Problems, 1, "but said")
	require.Equal(t, KindEmpty, res.Problems[0].Kind)
	require.Contains(t, res.Problems[0].Error, path)

	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteString(s)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	appendTo("job\n")
	first := h1.Scan("t", local)
	require.Len(t, first.Files, 1, "a file of one short line is identified")
	require.True(t, first.Files[0].Identity.Partial)
	appendTo("started\n")
	grown := h1.Scan("t", local)
	require.Equal(t, first.Files[0].Key, grown.Files[0].Key, "grown")
	appendTo(strings.Repeat("job output\n", 10)) // past the fingerprint length
	grown = h1.Scan("t", local)
	require.Equal(t, first.Files[0].Key, grown.Files[0].Key, "grown past the fingerprint")
	require.Equal(t, first.Files[0].Identity, grown.Files[0].Identity)

	// A restarted agent knows the identity from the file's checkpoint;
	// without it the grown file would be another file.
	restarted := scanner("h1")
	require.NotEqual(t, first.Files[0].Key, restarted.Scan("t", local).Files[0].Key)
	restarted = scanner("h1")
	restarted.Remember(first.Files[0].Identity)
	require.Equal(t, first.Files[0].Key, restarted.Scan("t", local).Files[0].Key)

	// Shared: written just now, so not identified, and said so.
	other := filepath.Join(root, "status.log")
	mk(t, other, "ok\n")
	require.NoError(t, os.Chtimes(other, now, now))
	m1, m2 := scanner("h1"), scanner("h2")
	res = m1.Scan("s", cfg(t, `{"paths":["`+other+`"],"shared":true}`))
	require.Empty(t, res.Files)
	require.Equal(t, 1, res.Unidentified)
	require.Len(t, res.Problems, 1)
	require.Equal(t, KindUnidentified, res.Problems[0].Kind)
	require.Equal(t, other, res.Problems[0].Path)
	now = now.Add(SharedQuiet)
	r1 := m1.Scan("s", cfg(t, `{"paths":["`+other+`"],"shared":true}`))
	r2 := m2.Scan("s", cfg(t, `{"paths":["`+other+`"],"shared":true}`))
	require.Len(t, r1.Files, 1, "quiet now")
	require.Empty(t, r1.Problems)
	require.Equal(t, r1.Files[0].Key, r2.Files[0].Key, "every member computes the same key")
	require.Zero(t, r1.Files[0].Identity.Birth)
}

// A short file's identity covers few bytes, so the scanner tells a rewrite
// from growth by the bytes it saw since: a file found short, written, then
// truncated and written again with the same first bytes (copytruncate) is
// a new file with a new key.
func TestRewrittenShortFileIsANewFile(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "app.log")
	mk(t, path, "f")
	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	c := cfg(t, `{"paths":["`+path+`"]}`)
	empty := s.Scan("t", c).Files[0]
	mk(t, path, "first content, long enough\n")
	require.Equal(t, empty.Key, s.Scan("t", c).Files[0].Key, "grown")
	require.NoError(t, os.Truncate(path, 0))
	mk(t, path, "f is for other content, longer than that\n")
	require.NotEqual(t, empty.Key, s.Scan("t", c).Files[0].Key, "rewritten")
}

// TestScanIdentifiesOnlyChangedFiles: a scan opens and fingerprints only
// the files that changed since the last one (idcache.go); a file rewritten
// in place (same size, its mtime set back) changed its ctime and gets its
// new identity.
func TestScanIdentifiesOnlyChangedFiles(t *testing.T) {
	root := t.TempDir()
	head := strings.Repeat("a", fp)
	for i := range 10 {
		mk(t, filepath.Join(root, fmt.Sprintf("f%d.log", i)), fmt.Sprintf("%s %d\n", head, i))
	}
	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	c := cfg(t, `{"paths":["`+root+`/*.log"]}`)
	first := s.Scan("t", c)
	require.Len(t, first.Files, 10)
	require.EqualValues(t, 10, s.opened.Load())

	again := s.Scan("t", c)
	require.Equal(t, first.Files, again.Files)
	require.EqualValues(t, 10, s.opened.Load(), "unchanged files are not opened again")
	// The same files in a shared topic have the shared keys, not the
	// local ones the cache keeps.
	shared := s.Scan("s", cfg(t, `{"paths":["`+root+`/*.log"],"shared":true}`))
	require.Len(t, shared.Files, 10)
	for i, f := range shared.Files {
		require.Equal(t, fileid.Key(f.Identity, true, "h1"), f.Key)
		require.NotEqual(t, first.Files[i].Key, f.Key)
	}

	// Grown: opened again.
	grown := filepath.Join(root, "f1.log")
	f, err := os.OpenFile(grown, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("more\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// Rewritten in place, same size, mtime set back: only ctime tells.
	rewritten := filepath.Join(root, "f2.log")
	fi, err := os.Stat(rewritten)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(rewritten, []byte(fmt.Sprintf("%s %d\n", strings.Repeat("b", fp), 2)), 0o644))
	require.NoError(t, os.Chtimes(rewritten, fi.ModTime(), fi.ModTime()))

	third := s.Scan("t", c)
	require.EqualValues(t, 12, s.opened.Load(), "the grown and the rewritten file are opened again")
	byPath := map[string]string{}
	for _, f := range first.Files {
		byPath[f.Path] = f.Key
	}
	for _, f := range third.Files {
		if f.Path == rewritten {
			require.NotEqual(t, byPath[f.Path], f.Key, "the rewritten file is a new file")
		} else {
			require.Equal(t, byPath[f.Path], f.Key)
		}
	}
}

// TestScanListsOnlyChangedDirectories: a one-directory glob is listed
// again only when the directory's entries changed (listing.go), and not
// kept while the directory changed within racyWindow.
func TestScanListsOnlyChangedDirectories(t *testing.T) {
	root := t.TempDir()
	mk(t, filepath.Join(root, "a.log"), strings.Repeat("a", fp)+"\n")
	s, err := NewScanner([]string{root}, "h1", fp)
	require.NoError(t, err)
	c := cfg(t, `{"paths":["`+root+`/*.log"]}`)

	// Changed just now: listed at every scan.
	require.Len(t, s.Scan("t", c).Files, 1)
	require.Len(t, s.Scan("t", c).Files, 1)
	require.EqualValues(t, 2, s.listed.Load(), "a directory changed within racyWindow is listed every time")

	defer func(w time.Duration) { racyWindow = w }(racyWindow)
	racyWindow = -time.Hour // as if the last change were long ago
	require.Len(t, s.Scan("t", c).Files, 1)
	require.Len(t, s.Scan("t", c).Files, 1)
	require.EqualValues(t, 3, s.listed.Load(), "an unchanged directory is not listed again")

	mk(t, filepath.Join(root, "b.log"), strings.Repeat("b", fp)+"\n")
	require.Len(t, s.Scan("t", c).Files, 2, "a new file changes the directory: listed again")
	require.NoError(t, os.Rename(filepath.Join(root, "a.log"), filepath.Join(root, "a.old")))
	require.Equal(t, []string{filepath.Join(root, "b.log")}, paths(s.Scan("t", c)), "a rename too")
	require.EqualValues(t, 5, s.listed.Load())

	// dir/** spans the directories below: a file created in one of them
	// leaves root's times unchanged, so it is never listed from a cache.
	mk(t, filepath.Join(root, "sub", "c.log"), strings.Repeat("c", fp)+"\n")
	all := cfg(t, `{"paths":["`+root+`/**"]}`)
	require.Len(t, s.Scan("t", all).Files, 3) // a.old, b.log, sub/c.log
	mk(t, filepath.Join(root, "sub", "d.log"), strings.Repeat("d", fp)+"\n")
	require.Len(t, s.Scan("t", all).Files, 4, "a file new in a subdirectory")
}
