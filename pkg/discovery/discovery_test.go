package discovery

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

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
		filepath.Join(root, "a.log"), filepath.Join(root, "b.log"),
		filepath.Join(root, "sub/c.log"), filepath.Join(root, "sub/deep/d.log"),
	}, paths(r))
	require.Equal(t, 1, r.Unidentified, "short.log is not identified yet")
	for _, f := range r.Files {
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
