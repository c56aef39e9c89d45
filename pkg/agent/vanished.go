package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// This file is the inventory's memory of files that left the globs: the
// rotated files still to be shipped to their end, and the deleted ones
// whose unshipped bytes are lost.

type vanishedFile struct {
	protocol.SeenFile
	at time.Time
	// covered is the size of the file (outside the globs) that a
	// checkpoint was seen to cover: its checkpoint is read again only if
	// it grows past it (its writer may still append after the rename).
	covered int64
}

// vanishedMemory is how long a file that left the scan is remembered for a
// late assignment.
const vanishedMemory = 10 * time.Minute

// finishedGrace is how long a file read to its end stays in the heartbeat:
// a checkpoint interval for its final checkpoint, then two scans of the
// other agents to see it, so that they stop reporting it before this agent
// does and the coordinator has no reason to hand it to one of them.
func (a *Agent) finishedGrace() time.Duration {
	return a.cfg.CheckpointInterval + 2*a.cfg.ScanInterval
}

// reportUnfinished adds to files the files of topic this agent saw under
// the globs that have left them (rotated to another name) but still exist
// next to where they were, or are held open (they may have no name left),
// and whose checkpoint does not cover them yet; a held file whose
// checkpoint covers it is let go.
// Every agent that can see such a file reports it until its end is
// shipped, so it always has someone to go to: when its owner dies, and
// when a handover of it is cut short by a coordinator failover (the new
// leader knows only the files that heartbeats list).
func (inv *inventory) reportUnfinished(ctx context.Context, topic string, cfg topics.Config, files *listBuilder,
	dirs dirIndex, view *runView) {
	var candidates []string
	found := map[string]protocol.SeenFile{}
	// Held files first: their descriptor gives the size even when the file
	// has no name left.
	for ref, h := range inv.held.of(topic) {
		if _, listed := files.get(ref.file); listed {
			continue
		}
		fi, err := h.fd.Stat()
		if err != nil {
			continue
		}
		candidates = append(candidates, ref.file)
		f := h.SeenFile
		f.Size = fi.Size()
		found[ref.file] = f
	}
	// Then the files remembered and not listed by this scan: those the
	// last scan listed (when this one found other files than it did, or
	// lists other extra files) and those that left the listing before.
	look := func(ref fileRef, v vanishedFile) {
		if _, listed := found[ref.file]; listed {
			return
		}
		if _, listed := files.get(ref.file); listed {
			return
		}
		e, ok := dirs.get(filepath.Dir(v.Path))[v.Identity.Inode]
		if !ok || (v.covered > 0 && e.size <= v.covered) {
			return // gone (noteVanished accounts for it), or shipped
		}
		size, ok := sizeIfSame(e.path, v.Identity, inv.a.cfg.FingerprintBytes)
		if !ok {
			return // the inode is another file's now
		}
		candidates = append(candidates, ref.file)
		found[ref.file] = protocol.SeenFile{Key: ref.file, Path: e.path, Size: size, Identity: v.Identity}
	}
	if last := inv.seen[topic]; last != nil && !inv.forgotten[topic] {
		maybeGone := last.files
		if files.same {
			maybeGone = last.extra // the scan found what the last one found
		}
		for key := range maybeGone {
			ref := fileRef{topic, key}
			if v, ok := inv.remembered(ref); ok {
				look(ref, v)
			}
		}
	}
	for ref, v := range inv.recent {
		if ref.topic == topic && (inv.forgotten[topic] || !inv.isListed(ref)) {
			look(ref, v)
		}
	}
	if len(candidates) == 0 {
		return
	}
	offsets, err := inv.readCheckpoints(ctx, topic, candidates)
	if err != nil {
		// Report them: a file reported once too often costs a handover;
		// one left out may be orphaned.
		inv.a.log.Warn("cannot read checkpoints of rotated files; reporting them", "topic", topic, "files", len(candidates), "err", err)
	}
	for _, key := range candidates {
		f := found[key]
		ref := fileRef{topic, key}
		if off, ok := offsets[key]; ok && off >= f.Size {
			// Shipped to its end. A rotated file that still grows is its
			// owner's to finish (it reads until the file is idle).
			v, _ := inv.remembered(ref)
			v.covered = f.Size
			inv.recent[ref] = v
			if h := inv.held.of(topic)[ref]; h != nil {
				inv.held.drop(ref, h) // another agent shipped it
			}
			continue
		}
		files.add(f)
		// This agent finished it, and its writer appended again after it
		// had been idle for --rotated-idle: the controller reads on from
		// the acknowledged offset.
		if ri, ok := view.runs[ref]; ok && ri.state == stateFinished && ri.fr.ackedOffset() < f.Size {
			inv.a.log.Info("finished rotated file grew again; reading on", "topic", topic, "path", f.Path,
				"offset", ri.fr.ackedOffset(), "size", f.Size)
			inv.changed[ref] = f.Path
		}
	}
}

// seedFromCheckpoints remembers, as if a scan had seen them, the files of
// topic that this agent may have to finish after a restart, so that
// reportUnfinished finds those rotated out of the globs while it was down
// and not shipped to their end. It reports whether they could be read.
//
// What it reads must not grow with the history of rotations, nor, on a
// local topic, with the other hosts' files (a local topic of 10,000 hosts
// holds every host's checkpoints):
//   - local topic with a state file: this agent's own files only, from the
//     state file (the files it was shipping when it stopped, no etcd read)
//     and from the checkpoints of its active assignments (one read each,
//     in Txns);
//   - shared topic, or no state file (--state-dir ""): every checkpoint of
//     the topic, in pages. A shared file may have been another member's,
//     and without a state file etcd is the only record; the coordinator
//     deletes the checkpoints of files gone for --checkpoint-retention, so
//     this grows with the topic's files, not with its history.
func (inv *inventory) seedFromCheckpoints(ctx context.Context, topic string, cfg topics.Config, view *runView) bool {
	if !cfg.Shared && inv.a.local != nil {
		return inv.seedFromOwn(ctx, topic, view)
	}
	return inv.seedFromTopic(ctx, topic, cfg)
}

// seedFromOwn seeds a local topic from the state file and from the
// checkpoints of this agent's own active assignments.
func (inv *inventory) seedFromOwn(ctx context.Context, topic string, view *runView) bool {
	a := inv.a
	now := inv.now()
	remember := func(file, path string, id protocol.FileIdentity) {
		a.scanner.Remember(id) // a short file's identity, which the scanner cannot compute again
		ref := fileRef{topic, file}
		if _, known := inv.remembered(ref); !known && id.Fingerprint != "" && path != "" {
			inv.recent[ref] = vanishedFile{SeenFile: protocol.SeenFile{Key: file, Path: path, Identity: id}, at: now}
		}
	}
	for file, e := range a.local.Topic(topic) {
		remember(file, e.Path, e.Identity)
	}
	var assigned []string
	for ref := range inv.activeOf(view, topic) {
		if _, known := inv.remembered(ref); !known {
			assigned = append(assigned, ref.file)
		}
	}
	slices.Sort(assigned)
	cps, err := inv.readCheckpointValues(ctx, topic, assigned)
	if err != nil {
		a.log.Warn("cannot read the checkpoints of this agent's assigned files; retrying at the next scan", "topic", topic, "err", err)
		return false
	}
	for file, cp := range cps {
		if cp.Agent == a.cfg.ID {
			remember(file, cp.Path, cp.Identity)
		}
	}
	return true
}

// seedFromTopic seeds from every checkpoint of the topic (this agent's
// own only, on a local topic), read in pages.
func (inv *inventory) seedFromTopic(ctx context.Context, topic string, cfg topics.Config) bool {
	a := inv.a
	prefix := a.cfg.Space.TopicOffsetsPrefix(topic)
	if !cfg.Shared {
		a.log.Info("no state file (--state-dir): reading every checkpoint of the local topic to find files rotated while the agent was down", "topic", topic)
	}
	if a.local != nil {
		// A short file's identity may be only here: saved before its
		// first line shipped, not yet in an etcd checkpoint.
		for _, e := range a.local.Topic(topic) {
			a.scanner.Remember(e.Identity)
		}
	}
	now := inv.now()
	_, err := mirror.ListPages(ctx, a.cfg.Client, []string{prefix}, seedPageSize, nil, func(_ int64, page []*mvccpb.KeyValue) error {
		for _, kv := range page {
			var cp protocol.Checkpoint
			if protocol.Unmarshal(string(kv.Key), kv.Value, &cp) != nil || cp.Identity.Fingerprint == "" || cp.Path == "" {
				continue
			}
			if !cfg.Shared && cp.Agent != a.cfg.ID {
				continue // another host's file
			}
			a.scanner.Remember(cp.Identity)
			ref := fileRef{topic, string(kv.Key[len(prefix):])}
			if _, known := inv.remembered(ref); !known {
				inv.recent[ref] = vanishedFile{SeenFile: protocol.SeenFile{Key: ref.file, Path: cp.Path, Identity: cp.Identity}, at: now}
			}
		}
		return nil
	})
	if err != nil {
		a.log.Warn("cannot read the topic's checkpoints; retrying at the next scan", "topic", topic, "err", err)
		return false
	}
	return true
}

// seedPageSize is the most checkpoints one read of seedFromTopic returns.
const seedPageSize = 1000

// countGoneAssigned counts the unshipped bytes of the files assigned to
// this agent for topic that nobody can read any more: not listed (neither
// under the globs nor as rotated and unfinished, see reportUnfinished), not
// being read here, known by identity (from a scan or a checkpoint) but not
// found next to where they were: deleted while the agent was down.
func (inv *inventory) countGoneAssigned(ctx context.Context, topic string, files map[string]protocol.SeenFile, dirs dirIndex, view *runView) {
	for ref := range inv.activeOf(view, topic) {
		if _, ok := files[ref.file]; ok {
			continue
		}
		if ri, ok := view.runs[ref]; inv.held.busy(ref) && (!ok || ri.state == stateTailing || ri.state == stateParked || ri.state == stateFinished) {
			continue // held, being read, or read to its end (a run newer than the view counts as read)
		}
		v, ok := inv.remembered(ref)
		if !ok || inv.lost.known(ref) {
			continue // identity unknown: nothing to look for; or counted
		}
		if _, found := dirs.get(filepath.Dir(v.Path))[v.Identity.Inode]; found {
			continue
		}
		// Deleted while the agent was down: its checkpoint's last size
		// minus its offset is what was never shipped.
		cp, ok, err := inv.a.getCheckpoint(ctx, ref)
		if err != nil {
			inv.a.log.Warn("cannot read the checkpoint of a deleted assigned file; counting its lost bytes at the next scan",
				"topic", topic, "path", v.Path, "err", err)
			continue
		}
		if !ok {
			inv.lost.count(ref, v.Path, 0, "")
			continue
		}
		inv.lost.count(ref, cp.Path, cp.Size-cp.Offset, "deleted before they were shipped (at least)")
	}
}

// remembered is what the inventory remembers of ref's file (see recent):
// listed, as its listing has it and as seen when its topic was last noted
// or when it was listed since; or no longer listed, from recent.
func (inv *inventory) remembered(ref fileRef) (vanishedFile, bool) {
	v, ok := inv.recent[ref]
	if l := inv.seen[ref.topic]; l != nil && !inv.forgotten[ref.topic] {
		if f, listed := l.files[ref.file]; listed {
			v.SeenFile = f
			if noted := inv.noted[ref.topic]; noted.After(v.at) {
				v.at = noted
			}
			return v, true
		}
	}
	return v, ok
}

// dropListing forgets what topic lists: its files are remembered in
// recent, as they were last seen.
func (inv *inventory) dropListing(topic string) {
	l := inv.seen[topic]
	if l == nil {
		return
	}
	if !inv.forgotten[topic] {
		for key := range l.files {
			ref := fileRef{topic, key}
			inv.recent[ref], _ = inv.remembered(ref)
		}
	}
	delete(inv.seen, topic)
	delete(inv.noted, topic)
	delete(inv.forgotten, topic)
	delete(inv.lastHB, topic)
	inv.listed = true
}

// expireRemembered forgets the files not seen for vanishedMemory.
func (inv *inventory) expireRemembered(now time.Time, view *runView) {
	expired := func(at time.Time) bool { return now.Sub(at) > vanishedMemory }
	// A topic listed but not noted for that long (no longer scanned): its
	// files were not seen since, but those listed later (found by the
	// directory watcher) or known better, which recent holds.
	for topic, l := range inv.seen {
		if inv.forgotten[topic] || !expired(inv.noted[topic]) {
			continue
		}
		for key := range l.files {
			if ref := (fileRef{topic, key}); inv.recent[ref].at.IsZero() {
				delete(inv.recent, ref)
				inv.forgetLocal(ref, view)
			}
		}
		inv.forgotten[topic] = true
	}
	for ref := range inv.recent {
		if v, _ := inv.remembered(ref); expired(v.at) {
			delete(inv.recent, ref)
			inv.forgetLocal(ref, view)
		}
	}
}

// noteVanished remembers the files of this scan (l, the topic's new
// listing, unchanged if it is the last one) and handles those of the last
// scan that are gone. On a local topic nobody else can account for a
// deleted file: if this agent is not reading it, its unshipped bytes are
// lost now.
func (inv *inventory) noteVanished(ctx context.Context, topic string, cfg topics.Config, l *listing, unchanged bool, view *runView) {
	now := inv.now()
	inv.expireRemembered(now, view)
	last := inv.seen[topic]
	var gone []protocol.SeenFile
	if last != nil && !unchanged {
		for key, f := range last.files {
			if _, still := l.files[key]; !still {
				gone = append(gone, f)
				ref := fileRef{topic, key}
				if v, ok := inv.remembered(ref); ok {
					inv.recent[ref] = v // as last seen
				}
			}
		}
	}
	// Every file listed now is seen now.
	inv.noted[topic] = now
	delete(inv.forgotten, topic)
	for ref, v := range inv.recent {
		if _, listed := l.files[ref.file]; listed && ref.topic == topic && v.covered == 0 {
			delete(inv.recent, ref) // its listing says as much
		}
	}
	for ref, f := range inv.lostPending {
		if ref.topic == topic && inv.countLost(ctx, topic, f) {
			delete(inv.lostPending, ref)
		}
	}
	for _, f := range gone {
		key := f.Key
		if _, err := os.Stat(f.Path); err == nil {
			continue // renamed out of the globs, not deleted
		}
		ref := fileRef{topic, key}
		if inv.held.busy(ref) {
			continue // held, or its tailer holds it open and reads it to its end
		}
		if !cfg.Shared {
			if !inv.countLost(ctx, topic, f) {
				inv.lostPending[ref] = f
			}
			// Counted (or to be): an assignment arriving later must not
			// start a tailer that fails and counts the same bytes again.
			delete(inv.recent, ref)
		}
	}
}

// forgetLocal drops the state file's entry of a file forgotten here (not
// seen for vanishedMemory) that no run reads and this agent is not
// assigned: a stop while a file was being read leaves its entry, and
// nothing else would ever remove it once the file is gone, so the state
// file, which the start-up reads, would grow with every such restart.
func (inv *inventory) forgetLocal(ref fileRef, view *runView) {
	if inv.a.local == nil {
		return
	}
	if _, running := view.runs[ref]; running || view.assigned[ref] {
		return
	}
	inv.a.local.Delete(ref.topic, ref.file)
}

// countLost counts the bytes of a deleted file past its checkpoint, once
// per file. It reports false if the checkpoint could not be read: nothing
// was counted, the caller tries again later.
func (inv *inventory) countLost(ctx context.Context, topic string, f protocol.SeenFile) bool {
	ref := fileRef{topic, f.Key}
	if inv.lost.known(ref) {
		return true
	}
	offset := int64(0)
	cp, ok, err := inv.a.getCheckpoint(ctx, ref)
	if err != nil {
		inv.a.log.Warn("cannot read the checkpoint of a deleted file; counting its lost bytes later", "topic", topic, "path", f.Path, "err", err)
		return false
	}
	if ok {
		offset = cp.Offset
	}
	inv.lost.count(ref, f.Path, f.Size-offset, "deleted before they were shipped")
	return true
}

// getCheckpoint reads a file's checkpoint. An etcd error is an error; an
// undecodable value is logged and reads as none.
func (a *Agent) getCheckpoint(ctx context.Context, ref fileRef) (protocol.Checkpoint, bool, error) {
	okey := a.cfg.Space.Offset(ref.topic, ref.file)
	resp, err := a.cfg.Client.Get(ctx, okey)
	if err != nil {
		return protocol.Checkpoint{}, false, fmt.Errorf("read checkpoint %s: %w", okey, err)
	}
	if len(resp.Kvs) == 0 {
		return protocol.Checkpoint{}, false, nil
	}
	var cp protocol.Checkpoint
	if err := protocol.Unmarshal(okey, resp.Kvs[0].Value, &cp); err != nil {
		a.log.Error("checkpoint unreadable; treated as none", "key", okey, "err", err)
		return protocol.Checkpoint{}, false, nil
	}
	return cp, true, nil
}

// readCheckpoints reads the offsets of files of topic, in Txns of at most
// maxTxnOps reads. A missing or unreadable checkpoint is left out.
func (inv *inventory) readCheckpoints(ctx context.Context, topic string, files []string) (map[string]int64, error) {
	cps, err := inv.readCheckpointValues(ctx, topic, files)
	out := make(map[string]int64, len(cps))
	for f, cp := range cps {
		out[f] = cp.Offset
	}
	return out, err
}

// readCheckpointValues reads the checkpoints of files of topic, in Txns of
// at most maxTxnOps reads. A missing or unreadable checkpoint is left out.
func (inv *inventory) readCheckpointValues(ctx context.Context, topic string, files []string) (map[string]protocol.Checkpoint, error) {
	out := map[string]protocol.Checkpoint{}
	for chunk := range slices.Chunk(files, maxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, f := range chunk {
			ops[i] = clientv3.OpGet(inv.a.cfg.Space.Offset(topic, f))
		}
		resp, err := inv.a.cfg.Client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return out, fmt.Errorf("read checkpoints of %s: %w", topic, err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				continue
			}
			var cp protocol.Checkpoint
			if protocol.Unmarshal(string(kvs[0].Key), kvs[0].Value, &cp) == nil {
				out[chunk[i]] = cp
			}
		}
	}
	return out, nil
}

type dirEntry struct {
	path string
	size int64
}

// dirIndex is one scan's view of directories by inode: each directory is
// read once per scan, however many remembered files are looked for in it.
type dirIndex map[string]map[uint64]dirEntry

func (d dirIndex) get(dir string) map[uint64]dirEntry {
	byInode, ok := d[dir]
	if !ok {
		byInode = inodes(dir)
		d[dir] = byInode
	}
	return byInode
}

// inodes maps the inode of every regular file in dir to its path and size.
func inodes(dir string) map[uint64]dirEntry {
	out := map[uint64]dirEntry{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			out[st.Ino] = dirEntry{path: filepath.Join(dir, e.Name()), size: info.Size()}
		}
	}
	return out
}

// sizeIfSame returns the size of the file at path if it has identity id.
func sizeIfSame(path string, id protocol.FileIdentity, fingerprintBytes int) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if same, err := fileid.Check(f, id, fingerprintBytes); err != nil || !same {
		return 0, false
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}
