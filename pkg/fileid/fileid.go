// Package fileid identifies log files by content and inode, not by path, and
// derives the <file> key of the etcd key space from that identity.
//
// Invariants:
//   - A file's identity is the SHA-256 of its first N bytes (the
//     fingerprint) together with its inode, and its device for local files.
//     A file shorter than N bytes has no identity yet (ErrTooShort).
//   - A rename keeps the identity, so a rotated file keeps its key and its
//     checkpoint. A rewrite of the first N bytes (copytruncate followed by
//     new content) changes the fingerprint, so the file is a new file read
//     from 0. Two files with the same first bytes differ by inode.
//   - On a shared topic the key leaves out the device and the agent, so
//     every member that mounts the volume computes the same key for the same
//     file. On a local topic it includes both, since inodes repeat across
//     hosts and disks.
//   - Keys are 32 lower-case hex digits: valid keyspace file keys.
package fileid

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/logferry/logferry/pkg/protocol"
)

// DefaultFingerprintBytes is how many leading bytes identify a file.
const DefaultFingerprintBytes = 1024

// ErrTooShort is returned for a file shorter than the fingerprint: it is not
// identified, and so not shipped, until it grows.
var ErrTooShort = errors.New("fileid: file shorter than the fingerprint")

// Of computes the identity of an open file from its first n bytes.
func Of(f *os.File, n int) (protocol.FileIdentity, error) {
	fi, err := f.Stat()
	if err != nil {
		return protocol.FileIdentity{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return protocol.FileIdentity{}, fmt.Errorf("%w: %s has %d bytes, %d needed", ErrTooShort, f.Name(), fi.Size(), n)
		}
		return protocol.FileIdentity{}, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return FromStat(fi, buf)
}

// FromStat builds the identity from a stat result and the file's first
// bytes.
func FromStat(fi os.FileInfo, head []byte) (protocol.FileIdentity, error) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return protocol.FileIdentity{}, fmt.Errorf("fileid: %s: no inode information on this platform", fi.Name())
	}
	sum := sha256.Sum256(head)
	return protocol.FileIdentity{
		Fingerprint: hex.EncodeToString(sum[:]),
		Inode:       st.Ino,
		Device:      uint64(st.Dev), //nolint:unconvert // Dev is not uint64 on every platform
	}, nil
}

// Key derives the <file> key. agent is ignored for shared topics.
func Key(id protocol.FileIdentity, shared bool, agent string) string {
	h := sha256.New()
	h.Write([]byte("logferry-file-v1\x00"))
	h.Write([]byte(id.Fingerprint))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], id.Inode)
	h.Write(b[:])
	if !shared {
		binary.BigEndian.PutUint64(b[:], id.Device)
		h.Write(b[:])
		h.Write([]byte(agent))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// FindByInode looks in dir for a regular file with the inode, as rotation
// renames a file within its directory (app.log -> app.log.1). It returns
// the file's path and size.
func FindByInode(dir string, inode uint64) (path string, size int64, ok bool) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", 0, false
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue // gone since ReadDir, or not a file
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Ino == inode {
			return filepath.Join(dir, e.Name()), info.Size(), true
		}
	}
	return "", 0, false
}

// Same reports whether two identities name the same file. For shared
// topics the device is not compared: NFS clients see different devices.
func Same(a, b protocol.FileIdentity, shared bool) bool {
	if a.Fingerprint != b.Fingerprint || a.Inode != b.Inode {
		return false
	}
	return shared || a.Device == b.Device
}
