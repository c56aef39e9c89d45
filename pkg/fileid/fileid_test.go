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
	return Of(f, n, false)
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
	require.NotEqual(t, ida.Inode, idb.Inode)

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

func TestShortFilesHavePartialIdentities(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "short.log")
	write(t, p, "")
	empty, err := idOf(t, p, DefaultFingerprintBytes)
	require.NoError(t, err, "an empty file is identified too")
	require.True(t, empty.Partial)
	require.Zero(t, empty.Bytes)

	write(t, p, "tiny\n")
	id, err := idOf(t, p, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.True(t, id.Partial)
	require.Equal(t, 5, id.Bytes)
	full, err := idOf(t, p, 5)
	require.NoError(t, err)
	require.False(t, full.Partial, "exactly n bytes is a full identity")

	// As the file grows, even past the fingerprint length, it still is the
	// file the partial identity names.
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString(strings.Repeat("growing\n", 300))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	r := mustOpen(t, p)
	same, err := Check(r, id, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.True(t, same, "a grown file keeps its partial identity")
	same, err = Check(r, empty, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.True(t, same, "an empty file's identity matches whatever it was then written")

	// A rewrite of those first bytes is another file.
	write(t, p, "TINY\n"+strings.Repeat("x", 2000))
	same, err = Check(mustOpen(t, p), id, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.False(t, same)
	// And one shorter than them is too.
	write(t, p, "ti")
	same, err = Check(mustOpen(t, p), id, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.False(t, same)
}

func TestPartialKeys(t *testing.T) {
	full := protocol.FileIdentity{Fingerprint: "ab", Inode: 7, Device: 1}
	// The key of a full identity is the one every earlier version
	// computed: changing it would ship every file again after an upgrade.
	require.Equal(t, "7f88118df92aea338a438ea0cc80abdd", Key(full, false, "h1"))
	partial := full
	partial.Partial, partial.Bytes = true, 2
	require.NotEqual(t, Key(full, false, "h1"), Key(partial, false, "h1"))
	reborn := partial
	reborn.Birth = 42
	require.NotEqual(t, Key(partial, false, "h1"), Key(reborn, false, "h1"), "a reused inode is another file")
	require.Equal(t, Key(partial, true, "h1"), Key(reborn, true, "h2"), "shared keys leave the birth time out")
}

func TestBirthTellsReusedInodesApart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.log")
	write(t, p, "x")
	id, err := idOf(t, p, DefaultFingerprintBytes)
	require.NoError(t, err)
	if id.Birth == 0 {
		t.Skip("this file system records no birth time")
	}
	shared, err := Of(mustOpen(t, p), DefaultFingerprintBytes, true)
	require.NoError(t, err)
	require.Zero(t, shared.Birth, "shared identities leave out what differs between hosts")
	require.Zero(t, shared.Device)
	other := id
	other.Birth++
	same, err := Check(mustOpen(t, p), other, DefaultFingerprintBytes)
	require.NoError(t, err)
	require.False(t, same)
}

func mustOpen(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func TestKeyScopes(t *testing.T) {
	id := protocol.FileIdentity{Fingerprint: "ab", Inode: 7, Device: 1}
	other := id
	other.Device = 2
	require.Equal(t, Key(id, true, "h1"), Key(other, true, "h2"), "shared keys ignore device and agent")
	require.NotEqual(t, Key(id, false, "h1"), Key(id, false, "h2"), "local keys carry the agent")
	require.NotEqual(t, Key(id, false, "h1"), Key(other, false, "h1"), "local keys carry the device")
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
