package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/logferry/logferry/internal/ctxwait"
	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/tailer"
)

// copyWait bounds how long the first run of a new file whose first bytes
// are those of a file being read here waits for that file to be truncated.
// logrotate's copytruncate copies a file, then truncates it at once: the
// copy then continues the original's offset instead of shipping its lines
// again under its own key. An original that is not truncated within
// copyWait was not copied that way, and the new file is a file of its own
// (a copy kept beside it, or a file that starts with the same bytes),
// read from its start.
const copyWait = 5 * time.Second

// copyPoll is how often a waiting copy looks at its original.
const copyPoll = 20 * time.Millisecond

// origins are the runs of this agent whose files a new file may have been
// copied from: every run, by topic. The controller adds and removes runs;
// the tailer goroutines of new files read it.
type origins struct {
	mu      sync.Mutex
	byTopic map[string]map[*fileRun]struct{}
}

func newOrigins() *origins { return &origins{byTopic: map[string]map[*fileRun]struct{}{}} }

func (o *origins) add(fr *fileRun) {
	o.mu.Lock()
	defer o.mu.Unlock()
	runs := o.byTopic[fr.topic]
	if runs == nil {
		runs = map[*fileRun]struct{}{}
		o.byTopic[fr.topic] = runs
	}
	runs[fr] = struct{}{}
}

func (o *origins) remove(fr *fileRun) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.byTopic[fr.topic], fr)
	if len(o.byTopic[fr.topic]) == 0 {
		delete(o.byTopic, fr.topic)
	}
}

// match returns the runs of fr's topic, other than of fr's own file, whose
// identity, or first bytes as their tailers read them, head (fr's file's
// first bytes, up to the fingerprint length n) starts with.
func (o *origins) match(fr *fileRun, head []byte, n int) []*fileRun {
	var full string
	if len(head) >= n {
		sum := sha256.Sum256(head[:n])
		full = hex.EncodeToString(sum[:])
	}
	// head's sums by length, each hashed once: most candidates saw n
	// bytes, and a topic can have thousands.
	sums := map[int][32]byte{}
	sumOf := func(k int) [32]byte {
		sum, ok := sums[k]
		if !ok {
			sum = sha256.Sum256(head[:k])
			sums[k] = sum
		}
		return sum
	}
	dir := filepath.Dir(fr.pathNow())
	var out, unread []*fileRun
	o.mu.Lock()
	for cand := range o.byTopic[fr.topic] {
		id := cand.identity
		if cand == fr || (id.Inode == fr.identity.Inode && id.Device == fr.identity.Device) {
			continue
		}
		seen := cand.seen.Load()
		switch {
		case startsWith(head, n, full, id) || startsWithSeen(head, seen, sumOf):
			out = append(out, cand)
		case id.Partial && (seen == nil || seen.n < n) && len(unread) < maxUnread &&
			!cand.rewritten.Load() && filepath.Dir(cand.pathNow()) == dir:
			// Found short (empty, after a truncation) and not read yet:
			// neither its identity nor its tailer knows its start. (A
			// rewritten file's inode holds other content now.)
			unread = append(unread, cand)
		}
	}
	o.mu.Unlock()
	// A file beside it whose tailer has not read its start yet (it was
	// found moments ago, empty perhaps): its start is in the file itself.
	for _, cand := range unread {
		if continues(cand, head) {
			out = append(out, cand)
		}
	}
	return out
}

// maxUnread bounds the files match reads to compare their start.
const maxUnread = 16

// continues reports whether cand's file, read now, starts with head (one
// byte at least).
func continues(cand *fileRun, head []byte) bool {
	if len(head) == 0 {
		return false
	}
	f, err := openByInode(cand.pathNow(), cand.identity.Inode)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, len(head))
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(len(head))), buf); err != nil {
		return false
	}
	return bytes.Equal(buf, head)
}

// startsWith reports whether head starts with the bytes id covers (at
// least one). full is head's fingerprint, hashed once for every candidate.
func startsWith(head []byte, n int, full string, id protocol.FileIdentity) bool {
	switch covered := fileid.Covered(id, n); {
	case id.Fingerprint == "" || covered == 0 || len(head) < covered:
		return false
	case covered == n:
		return full == id.Fingerprint
	default:
		return fileid.Matches(head, id, n)
	}
}

// startsWithSeen reports whether head starts with the bytes s saw (at
// least one); sumOf(k) is the sum of head's first k bytes.
func startsWithSeen(head []byte, s *seenHead, sumOf func(int) [32]byte) bool {
	return s != nil && s.n > 0 && len(head) >= s.n && sumOf(s.n) == s.sum
}

// copiedFrom reports where a file never shipped before starts if it is a
// copytruncate copy of a file this agent was reading: at the offset Kafka
// acknowledged of the original once the original was truncated (or at the
// copy's end, if the original was read past it before the truncation).
// Lines before it were shipped under the original's key; those after it
// are only in the copy. It reports false when the file is no such copy.
func (a *Agent) copiedFrom(ctx context.Context, fr *fileRun) (int64, bool) {
	deadline := time.Now().Add(copyWait)
	var cands []*fileRun
	for {
		head, fi, err := a.copyHead(fr)
		if err != nil {
			return 0, false
		}
		if fi.ModTime().Before(a.started) {
			// Written last before this agent started: not a copy of a
			// file one of its runs was reading (and at a first start on a
			// host of many files, none is compared with all the others).
			return 0, false
		}
		growing := time.Since(fi.ModTime()) < 5*copyPoll
		if cands = a.origins.match(fr, head, a.cfg.FingerprintBytes); len(cands) > 0 || !growing || len(head) >= a.cfg.FingerprintBytes {
			break
		}
		// Still being written, and too short to tell yet: perhaps a copy
		// in progress. Its start slot goes to others meanwhile.
		a.starts.give(fr)
		if !waitUntil(ctx, deadline) {
			return 0, false
		}
	}
	if len(cands) == 0 {
		return 0, false
	}
	// The original's tailer may need a start slot to see its truncation:
	// this one's goes back while it waits.
	a.starts.give(fr)
	for {
		for _, o := range cands {
			if !o.rewritten.Load() && !truncated(o) {
				continue
			}
			dctx, cancel := context.WithDeadline(ctx, deadline.Add(copyWait))
			_ = o.waitDrained(dctx) // else what was acknowledged by then: at worst lines again, never lost
			cancel()
			_, fi, err := a.copyHead(fr) // complete now: the original was truncated after the copy
			if err != nil {
				return 0, false
			}
			off := min(o.ackedOffset(), fi.Size())
			a.log.Info("a copy of a truncated file (copytruncate) continues its offset", "topic", fr.topic,
				"path", fr.pathNow(), "copy_of", o.pathNow(), "offset", off, "file", fr.key, "copy_of_file", o.key)
			a.m.copiesContinued.Inc()
			return off, true
		}
		if !waitUntil(ctx, deadline) {
			a.log.Info("starts with the bytes of a file being read, which was not truncated: read from its start",
				"topic", fr.topic, "path", fr.pathNow(), "like", cands[0].pathNow(), "file", fr.key, "like_file", cands[0].key)
			return 0, false
		}
	}
}

// copyHead reads the first bytes of fr's file (up to the fingerprint
// length), and its stat.
func (a *Agent) copyHead(fr *fileRun) ([]byte, os.FileInfo, error) {
	f, err := openByInode(fr.pathNow(), fr.identity.Inode)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, a.cfg.FingerprintBytes)
	n, err := f.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	return buf[:n], fi, nil
}

// truncated reports whether o's file is shorter now than what o shipped
// of it: truncated, and perhaps not written again yet (o's tailer waits to
// tell a rewrite from the same content written again).
func truncated(o *fileRun) bool {
	f, err := openByInode(o.pathNow(), o.identity.Inode)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	return err == nil && fi.Size() < o.ackedOffset()
}

// openByInode opens the file with inode at path, or, if path names
// another file by now (rotated: app.log.1 -> app.log.2), beside it.
func openByInode(path string, inode uint64) (*os.File, error) {
	for range 2 {
		f, err := os.Open(path)
		if err == nil {
			fi, err := f.Stat()
			if st, ok := fi.Sys().(*syscall.Stat_t); err == nil && ok && st.Ino == inode {
				return f, nil
			}
			f.Close()
		}
		p, _, found := fileid.FindByInode(filepath.Dir(path), inode)
		if !found {
			return nil, fmt.Errorf("%s: inode %d: %w", path, inode, fs.ErrNotExist)
		}
		path = p
	}
	return nil, fmt.Errorf("%s: inode %d keeps moving", path, inode)
}

// waitUntil waits copyPoll, and reports false once deadline or ctx is
// past.
func waitUntil(ctx context.Context, deadline time.Time) bool {
	return time.Now().Before(deadline) && ctxwait.Sleep(ctx, copyPoll)
}

// seenHead is a hash of a file's first n bytes.
type seenHead struct {
	n   int
	sum [32]byte
}

// noteHead adds line to what fr's tailer read of the file's first n
// bytes, if it continues them. Tailer goroutine only.
func (fr *fileRun) noteHead(line tailer.Line, n int) {
	have := len(fr.headBuf)
	if fr.headDone || line.Start != int64(have) {
		return
	}
	if fr.headBuf == nil {
		fr.headBuf = make([]byte, 0, n)
	}
	fr.headBuf = append(fr.headBuf, line.Data[:min(len(line.Data), n-have)]...)
	if line.End > line.Start+int64(len(line.Data)) && len(fr.headBuf) < n {
		fr.headBuf = append(fr.headBuf, '\n')
	}
	fr.seen.Store(&seenHead{n: len(fr.headBuf), sum: sha256.Sum256(fr.headBuf)})
	if len(fr.headBuf) == n {
		fr.headBuf, fr.headDone = nil, true
	}
}
