package discovery

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/protocol"
)

// SharedQuiet is how long a file shorter than the fingerprint must have
// gone unwritten before a scan identifies it on a shared topic. Members
// scan at different moments: a file still being written would be hashed
// over different lengths, so each would compute another key and the file
// would be shipped twice. Once it is quiet they all hash the same bytes.
// Local topics need no wait: one agent sees the file, and it remembers
// the identity it gave.
const SharedQuiet = 5 * time.Second

// forgetShortAfter is how long the scanner remembers a short file's
// identity after the last time it saw it. A file that leaves every glob
// for longer and comes back, grown, is identified again, under another
// key; files being read are followed by identity, not by scans, and so
// keep theirs.
const forgetShortAfter = time.Hour

// inodeRef names a file on this host; dev is 0 for shared topics'
// identities, which leave the device out (as the identities do, so that a
// remembered identity is found under the same inodeRef).
type inodeRef struct{ dev, ino uint64 }

type shortFile struct {
	id   protocol.FileIdentity
	seen time.Time
	// The file's first bytes as far as the scanner has seen them (up to
	// the fingerprint length): the identity covers fewer, and an empty
	// file's none, so a rewrite is told from growth by these.
	checked int
	sum     [32]byte
}

// shortFiles remembers the partial identities the scanner gave, so that a
// file identified while short keeps its identity, and key, as it grows
// past the fingerprint length. Scans and the watcher share it.
type shortFiles struct {
	mu     sync.Mutex
	ids    map[inodeRef]shortFile
	pruned time.Time
}

// Remember makes the scanner give id again to the file it names while its
// first bytes still match: for partial identities read back from
// checkpoints when the agent starts. Full identities need no memory.
func (s *Scanner) Remember(id protocol.FileIdentity) {
	if !id.Partial || id.Bytes == 0 {
		return
	}
	s.short.mu.Lock()
	defer s.short.mu.Unlock()
	sf := shortFile{id: id, seen: s.now(), checked: -1} // the fingerprint alone, until seen
	s.short.ids[inodeRef{dev: id.Device, ino: id.Inode}] = sf
}

// has reports whether a partial identity is remembered for the file
// (on a shared topic, by inode alone, as identify looks it up).
func (m *shortFiles) has(ref inodeRef, shared bool) bool {
	if shared {
		ref.dev = 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.ids[ref]
	return ok
}

// Superseded reports whether the scanner has identified id's file anew
// since: same inode and birth time, another identity. A partial identity
// covers few bytes (an empty file's none), so a file truncated and written
// again still matches it; the scanner saw the rewrite. A file deleted
// (and perhaps held open) whose inode now holds another file, born later,
// is not superseded: it still is itself. Without birth times the two
// cannot be told apart, and nothing is superseded (reading a rewritten
// file again beats losing a deleted one).
func (s *Scanner) Superseded(id protocol.FileIdentity) bool {
	if !id.Partial || id.Birth == 0 {
		return false
	}
	s.short.mu.Lock()
	defer s.short.mu.Unlock()
	sf, ok := s.short.ids[inodeRef{dev: id.Device, ino: id.Inode}]
	return ok && sf.id != id && sf.id.Birth == id.Birth
}

// Forget drops id, a partial identity whose file a reader found written
// anew (truncated and written again between two scans, which only see
// the start of it): the next scan identifies the file afresh, under a new
// key.
func (s *Scanner) Forget(id protocol.FileIdentity) {
	if !id.Partial {
		return
	}
	s.short.mu.Lock()
	defer s.short.mu.Unlock()
	ref := inodeRef{dev: id.Device, ino: id.Inode}
	if sf, ok := s.short.ids[ref]; ok && sf.id == id {
		delete(s.short.ids, ref)
	}
}

// identify returns f's identity: the remembered partial one while it
// still matches, else a new one. ok is false for a short file on a shared
// topic that is not SharedQuiet yet.
func (s *Scanner) identify(f *os.File, shared bool) (id protocol.FileIdentity, ok bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return id, false, err
	}
	st, isUnix := fi.Sys().(*syscall.Stat_t)
	if !isUnix {
		id, err := fileid.Of(f, s.fingerprintBytes, shared) // fails with its reason
		return id, err == nil, err
	}
	ref := inodeRef{ino: st.Ino}
	if !shared {
		ref.dev = uint64(st.Dev) //nolint:unconvert // Dev is not uint64 on every platform
	}
	now := s.now()
	// Held while the file is read: the watcher and a scan identifying the
	// same new short file at once would each find it anew, under two keys.
	s.short.mu.Lock()
	defer s.short.mu.Unlock()
	known, remembered := s.short.ids[ref]
	if remembered {
		// Same inode (and device) by the map's key; the birth time and the
		// first bytes, as far as they were seen, tell the rest.
		head, err := s.head(f)
		if err != nil {
			return id, false, err
		}
		same := fileid.Matches(head, known.id, s.fingerprintBytes) && (known.id.Birth == 0 || fileid.Birth(f) == known.id.Birth)
		if same && (known.checked < 0 || (len(head) >= known.checked && sha256.Sum256(head[:known.checked]) == known.sum)) {
			s.short.ids[ref] = shortFile{id: known.id, seen: now, checked: len(head), sum: sha256.Sum256(head)}
			return known.id, true, nil
		}
	}
	id, err = fileid.Of(f, s.fingerprintBytes, shared)
	if err != nil {
		return id, false, err
	}
	if !id.Partial || id.Bytes == 0 {
		// If remembered: rewritten, the short file it was is gone. An
		// empty file is not identified (the caller skips it).
		delete(s.short.ids, ref)
		return id, true, nil
	}
	if shared && now.Sub(fi.ModTime()) < SharedQuiet {
		return id, false, nil
	}
	s.short.ids[ref] = shortFile{id: id, seen: now, checked: -1}
	s.pruneLocked(now)
	return id, true, nil
}

// head is f's first bytes, up to the fingerprint length.
func (s *Scanner) head(f *os.File) ([]byte, error) {
	buf := make([]byte, s.fingerprintBytes)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:n], nil
}

// pruneLocked forgets, at most once a minute, the files not seen for
// forgetShortAfter.
func (s *Scanner) pruneLocked(now time.Time) {
	if now.Sub(s.short.pruned) < time.Minute {
		return
	}
	s.short.pruned = now
	for ref, sf := range s.short.ids {
		if now.Sub(sf.seen) > forgetShortAfter {
			delete(s.short.ids, ref)
		}
	}
}
