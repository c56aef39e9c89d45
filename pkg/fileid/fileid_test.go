package fileid

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
}

func idOf(t *testing.T, path string, n int) (protocol.FileIdentity, error) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	return Of(f, n)
}

func TestIdentity(t *testing.T) {
	dir := t.TempDir()
	head := strings.Repeat("same first kilobyte ", 60)
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	write(t, a, head+"then a\n")
	write(t, b, head+"then b\n")

	ida, err := idOf(t, a, DefaultFingerprintBytes)
	require.NoError(t, err)
	idb, err := idOf(t, b, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.Equal(t, ida.Fingerprint, idb.Fingerprint, "same first bytes, same fingerprint")
	require.NotEqual(t, Key(ida, true, "x"), Key(idb, true, "x"), "two files with the same start are still two files")
	require.False(t, Same(ida, idb, true))

	// A rename keeps the identity and so the key.
	require.NoError(t, os.Rename(a, a+".1"))
	idr, err := idOf(t, a+".1", DefaultFingerprintBytes)
	require.NoError(t, err)
	require.Equal(t, ida, idr)
	require.Equal(t, Key(ida, false, "h1"), Key(idr, false, "h1"))

	// Rewriting the head (copytruncate, then new content) changes it.
	write(t, b, strings.Repeat("new content ", 100))
	idb2, err := idOf(t, b, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.Equal(t, idb.Inode, idb2.Inode)
	require.NotEqual(t, Key(idb, true, ""), Key(idb2, true, ""))
}

func TestTooShort(t *testing.T) {
	p := filepath.Join(t.TempDir(), "short.log")
	write(t, p, "tiny\n")
	_, err := idOf(t, p, DefaultFingerprintBytes)
	require.ErrorIs(t, err, ErrTooShort)
	require.Contains(t, err.Error(), p)
	_, err = idOf(t, p, 5)
	require.NoError(t, err, "exactly n bytes is enough")
}

func TestKeyScopes(t *testing.T) {
	id := protocol.FileIdentity{Fingerprint: "ab", Inode: 7, Device: 1}
	other := id
	other.Device = 2
	require.Equal(t, Key(id, true, "h1"), Key(other, true, "h2"), "shared keys ignore device and agent")
	require.NotEqual(t, Key(id, false, "h1"), Key(id, false, "h2"), "local keys carry the agent")
	require.NotEqual(t, Key(id, false, "h1"), Key(other, false, "h1"), "local keys carry the device")
	require.True(t, Same(id, other, true))
	require.False(t, Same(id, other, false))
	k := Key(id, true, "")
	require.Len(t, k, 32)
	require.NoError(t, keyspace.ValidateFileKey(k))
}

func TestFindByInode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "app.log")
	write(t, p, "content\n")
	f, err := os.Open(p)
	require.NoError(t, err)
	fi, _ := f.Stat()
	f.Close()
	inode := fi.Sys().(*syscall.Stat_t).Ino
	require.NoError(t, os.Rename(p, p+".1"))
	write(t, p, "a new file\n")
	got, size, ok := FindByInode(dir, inode)
	require.True(t, ok)
	require.Equal(t, p+".1", got)
	require.Equal(t, int64(8), size)
	_, _, ok = FindByInode(dir, inode+1_000_000)
	require.False(t, ok)
	_, _, ok = FindByInode(filepath.Join(dir, "missing"), inode)
	require.False(t, ok)
}
