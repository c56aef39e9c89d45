// Package fileid identifies log files by content and inode, not by path, and
// derives the <file> key of the etcd key space from that identity.
//
// Invariants:
//   - A file's identity is the SHA-256 of its first N bytes (the
//     fingerprint) together with its inode, and its device for local files.
//   - A file shorter than N bytes is identified too, by a partial
//     fingerprint of all its bytes (none, for an empty file). It keeps that
//     identity, and so its key, as it grows: a partial identity matches a
//     file whose first Bytes bytes still hash to it (Check). Whoever
//     identifies a growing file again from scratch (after forgetting it)
//     gets another identity, so callers remember partial identities (the
//     scanner's memory, seeded from checkpoints).
//   - A rename keeps the identity, so a rotated file keeps its key and its
//     checkpoint. A rewrite of the first bytes (copytruncate followed by
//     new content) changes the fingerprint, so the file is a new file read
//     from 0. Two files with the same first bytes differ by inode.
//   - On a shared topic the key leaves out the device, the birth time and
//     the agent, so every member that mounts the volume computes the same
//     key for the same file. On a local topic it includes them, since
//     inodes repeat across hosts and disks.
//   - A full identity's key is computed as it always was (one key scheme
//     across versions); a partial identity's key also covers its length,
//     and on a local topic its birth time and when it was found, so a
//     short file truncated and written again is a new file even when its
//     first bytes are the same.
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
	"time"

	"golang.org/x/sys/unix"

	"github.com/logferry/logferry/pkg/protocol"
)

// DefaultFingerprintBytes is how many leading bytes identify a file.
const DefaultFingerprintBytes = 1024

// Of computes the identity of an open file from its first n bytes, or from
// all of them (a partial identity) if it is shorter. shared leaves out
// what differs between the hosts that mount a shared volume: the device
// and the birth time.
func Of(f *os.File, n int, shared bool) (protocol.FileIdentity, error) {
	fi, err := f.Stat()
	if err != nil {
		return protocol.FileIdentity{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return protocol.FileIdentity{}, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	id, err := FromStat(fi, buf[:got])
	if err != nil {
		return id, err
	}
	if got < n {
		id.Partial, id.Bytes = true, got
		if !shared {
			id.Birth = Birth(f)
			id.Found = time.Now().UnixNano()
		}
	}
	if shared {
		id.Device = 0 // NFS clients see different devices
	}
	return id, nil
}

// Birth is f's birth time in Unix nanoseconds, or 0 where the file system
// does not record it.
func Birth(f *os.File) int64 {
	var st unix.Statx_t
	if unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &st) != nil || st.Mask&unix.STATX_BTIME == 0 {
		return 0
	}
	return st.Btime.Sec*1e9 + int64(st.Btime.Nsec)
}

// FromStat builds a full identity from a stat result and the file's first
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

// Covered is how many leading bytes id's fingerprint covers, for an agent
// whose fingerprint length is n.
func Covered(id protocol.FileIdentity, n int) int {
	if id.Partial {
		return id.Bytes
	}
	return n
}

// Check reports whether the open file f still is the file want
// identifies: same inode (and device and birth time, where want has them),
// and its first Covered(want, n) bytes hash to want's fingerprint. A file
// that grew keeps a partial identity; one whose first bytes were rewritten,
// or that shrank below them, does not.
func Check(f *os.File, want protocol.FileIdentity, n int) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("fileid: %s: no inode information on this platform", fi.Name())
	}
	if st.Ino != want.Inode || (want.Device != 0 && uint64(st.Dev) != want.Device) { //nolint:unconvert // Dev is not uint64 on every platform
		return false, nil
	}
	if want.Birth != 0 && Birth(f) != want.Birth {
		return false, nil
	}
	buf := make([]byte, Covered(want, n))
	if _, err := f.ReadAt(buf, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil // shorter than what identified it
		}
		return false, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return Matches(buf, want, n), nil
}

// Matches reports whether head, a file's first bytes, starts with the
// bytes want's fingerprint covers (Covered(want, n) of them).
func Matches(head []byte, want protocol.FileIdentity, n int) bool {
	covered := Covered(want, n)
	if len(head) < covered {
		return false
	}
	sum := sha256.Sum256(head[:covered])
	return hex.EncodeToString(sum[:]) == want.Fingerprint
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
	if id.Partial {
		// The fingerprint of a short file is the hash of fewer bytes: its
		// length and birth time keep it apart from full identities and
		// from an earlier file on the same inode.
		h.Write([]byte("\x00partial"))
		binary.BigEndian.PutUint64(b[:], uint64(id.Bytes))
		h.Write(b[:])
		if !shared {
			binary.BigEndian.PutUint64(b[:], uint64(id.Birth))
			h.Write(b[:])
			binary.BigEndian.PutUint64(b[:], uint64(id.Found))
			h.Write(b[:])
		}
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
