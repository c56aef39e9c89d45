package statefile

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/protocol"
)

func TestSaveAndReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, "h1")
	require.NoError(t, err)
	_, ok := s.Get("web", "f1")
	require.False(t, ok, "a new state is empty")
	e := Entry{Offset: 42, Identity: protocol.FileIdentity{Fingerprint: "ab", Inode: 7}, Path: "/var/log/a.log", Updated: time.Unix(100, 0).UTC()}
	s.Set("web", "f1", e)
	s.Set("web", "f2", Entry{Offset: 1})
	s.Delete("web", "f2")
	require.NoError(t, s.Save())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file left behind")

	again, err := Open(dir, "h1")
	require.NoError(t, err)
	got, ok := again.Get("web", "f1")
	require.True(t, ok)
	require.Equal(t, e, got)
	require.Equal(t, 1, again.Len())

	other, err := Open(dir, "h2")
	require.NoError(t, err)
	require.Zero(t, other.Len(), "another agent id's state is not this agent's")
}

func TestUnreadableStateIsAnError(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":       "not json",
		"unknown field": `{"v":1,"agent":"h1","entries":{},"extra":1}`,
		"other version": `{"v":2,"agent":"h1","entries":{}}`,
		"trailing data": `{"v":1,"agent":"h1","entries":{}} {}`,
		"entry key":     `{"v":1,"agent":"h1","entries":{"nokey":{"offset":1}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(dir, FileName), []byte(content), 0o600))
			_, err := Open(dir, "h1")
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, filepath.Join(dir, FileName), "the error names the file")
		})
	}
}

func TestSaveOnlyWhenChanged(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, "h1")
	require.NoError(t, err)
	require.NoError(t, s.Save())
	_, err = os.Stat(filepath.Join(dir, FileName))
	require.ErrorIs(t, err, os.ErrNotExist, "nothing to save, nothing written")
	s.Set("t", "f", Entry{Offset: 1})
	require.NoError(t, s.Save())
	fi, err := os.Stat(filepath.Join(dir, FileName))
	require.NoError(t, err)
	s.Set("t", "f", Entry{Offset: 1})
	require.NoError(t, s.Save())
	fi2, err := os.Stat(filepath.Join(dir, FileName))
	require.NoError(t, err)
	require.Equal(t, fi.ModTime(), fi2.ModTime(), "the same offset again writes nothing")
}
