package agent

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/tailer"
	"github.com/logferry/logferry/pkg/topics"
)

// assignment is one /assign/<agent>/<P>/<file> key as the agent sees it.
type assignment struct {
	topic, file string
	createRev   int64
	value       protocol.Assignment
}

// loop is the agent's control loop state; only loop.run's goroutine
// touches it.
type loop struct {
	a *Agent

	topicsLoaded bool
	// assignsLoaded: the first heartbeat waits for the assignment snapshot,
	// so it lists the assigned files this agent still has to finish.
	assignsLoaded bool
	topics        map[string]topics.Entry
	refused       map[string]bool
	seen          map[string]map[string]protocol.SeenFile // topic -> file key -> file
	// recent remembers every file seen in the last vanishedMemory, by
	// fileKey: an assignment can arrive after the file left
	// the globs (renamed by rotation: the tailer finds it by inode) or was
	// deleted (the tailer then counts its bytes as lost).
	recent map[string]vanishedFile
	// seeded marks topics whose checkpoints were read into recent, once
	// per run: after a restart the agent remembers nothing else of the
	// files that rotated out of the globs while it was down.
	seeded map[string]bool
	// lostCounted marks assignments whose lost bytes were counted.
	lostCounted map[string]bool
	assigns     map[string]assignment // assign key -> assignment
	runs        map[string]*fileRun   // assign key -> run
	held        map[string]*heldFile  // fileKey -> file found by the watcher, not tailed yet
	watcher     *discovery.Watcher    // nil without directory events
	heartbeats  map[string]bool       // topics with a heartbeat key set
	problems    map[problemKey]protocol.Problem
	lostBytes   int64
	lastStatus  []byte

	releasing   sync.WaitGroup // release goroutines
	stopped     chan struct{}  // closed when run returns
	tailerExits chan tailerExit
	releases    chan releaseDone
	scanNow     chan struct{}
}

func newLoop(a *Agent) *loop {
	return &loop{
		a:           a,
		topics:      map[string]topics.Entry{},
		refused:     map[string]bool{},
		seen:        map[string]map[string]protocol.SeenFile{},
		recent:      map[string]vanishedFile{},
		seeded:      map[string]bool{},
		lostCounted: map[string]bool{},
		assigns:     map[string]assignment{},
		runs:        map[string]*fileRun{},
		held:        map[string]*heldFile{},
		heartbeats:  map[string]bool{},
		problems:    map[problemKey]protocol.Problem{},
		tailerExits: make(chan tailerExit, 16),
		releases:    make(chan releaseDone, 16),
		scanNow:     make(chan struct{}, 1),
		stopped:     make(chan struct{}),
	}
}

func (l *loop) triggerScan() {
	select {
	case l.scanNow <- struct{}{}:
	default:
	}
}

func (l *loop) run(ctx context.Context, topicEvents <-chan topics.Event, assignBatches <-chan mirror.Batch,
	found <-chan discovery.Found, p parts) error {
	defer close(l.stopped)
	scan := time.NewTicker(l.a.cfg.ScanInterval)
	defer scan.Stop()
	cp := time.NewTicker(l.a.cfg.CheckpointInterval)
	defer cp.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.topicsWatch.done:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("agent: etcd watch of the topics ended: %w", p.topicsWatch.err)
		case <-p.assignWatch.done:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("agent: etcd watch of the assignments ended: %w", p.assignWatch.err)
		case <-p.ship.done:
			return fmt.Errorf("agent: shipper stopped: %w", p.ship.err)
		case <-p.reg.done:
			return fmt.Errorf("agent: heartbeat stopped: %w", p.reg.err)
		case ev := <-topicEvents:
			l.onTopicEvent(ev)
			l.triggerScan()
		case b := <-assignBatches:
			l.onAssignBatch(b)
			l.reconcile(ctx)
		case <-scan.C:
			l.scan()
			l.reconcile(ctx)
		case <-l.scanNow:
			l.scan()
			l.reconcile(ctx)
		case f := <-found:
			l.onFound(ctx, f)
		case ex := <-l.tailerExits:
			l.onTailerExit(ex)
		case rd := <-l.releases:
			l.onRelease(rd)
		case <-cp.C:
			l.checkpoint(ctx)
		}
	}
}

func (l *loop) onTopicEvent(ev topics.Event) {
	switch ev.Type {
	case topics.Snapshot:
		l.topics = map[string]topics.Entry{}
		for _, e := range ev.Entries {
			l.topics[e.Name] = e
		}
		if !l.topicsLoaded {
			l.topicsLoaded = true
			close(l.a.ready)
		}
	case topics.Changed:
		l.topics[ev.Name] = ev.Entry
	case topics.Deleted:
		delete(l.topics, ev.Name)
	}
}

func (l *loop) onAssignBatch(b mirror.Batch) {
	if b.Snapshot {
		l.assigns = map[string]assignment{}
		if !l.assignsLoaded {
			l.assignsLoaded = true
			l.triggerScan()
		}
	}
	for _, ev := range b.Events {
		if ev.Type == mirror.Delete {
			delete(l.assigns, ev.KV.Key)
			continue
		}
		k, err := l.a.cfg.Space.Parse(ev.KV.Key)
		if err != nil || k.Kind != keyspace.KindAssign || k.Agent != l.a.cfg.ID {
			l.a.log.Warn("ignoring unparsable assignment key", "key", ev.KV.Key, "err", err)
			continue
		}
		var v protocol.Assignment
		if err := protocol.Unmarshal(ev.KV.Key, ev.KV.Value, &v); err != nil {
			l.a.log.Error("ignoring undecodable assignment", "key", ev.KV.Key, "err", err)
			continue
		}
		l.assigns[ev.KV.Key] = assignment{topic: k.Topic, file: k.File, createRev: ev.KV.CreateRevision, value: v}
	}
}

// reconcile starts, stops and releases tailers so they match the
// assignments.
func (l *loop) reconcile(ctx context.Context) {
	// Runs whose assignment vanished (or was recreated: a new create
	// revision is a new fence) stop at once and write nothing more.
	for key, fr := range l.runs {
		as, ok := l.assigns[key]
		if ok && as.createRev == fr.createRev {
			continue
		}
		if fr.releasing {
			continue // the release Txn will fail its guard and report back
		}
		l.a.log.Info("assignment gone without release; stopping at once", "topic", fr.topic, "path", fr.path, "file", fr.key)
		l.abandon(fr)
		delete(l.runs, key)
	}
	for _, key := range slices.Sorted(maps.Keys(l.assigns)) {
		as := l.assigns[key]
		fr := l.runs[key]
		if as.value.State == protocol.StateRevoking {
			if fr == nil {
				fr = newFileRun(as.topic, as.file, key, as.createRev, as.value.Path, protocol.FileIdentity{}, topics.Config{})
				fr.finished = true // never read here: release without a checkpoint
				l.runs[key] = fr
			}
			if !fr.releasing {
				l.release(fr)
			}
			continue
		}
		entry, ok := l.topics[as.topic]
		if !ok || entry.Err != nil || entry.Config.Paused || l.refused[as.topic] {
			if fr != nil && fr.cancel != nil {
				l.stopTailer(fr) // keep the assignment and checkpoint; resume later
			}
			continue
		}
		if fr == nil {
			f, seen := l.seen[as.topic][as.file]
			if !seen {
				// Rotated out of the globs, or deleted, after a scan saw it:
				// the tailer finds it by inode next to its old path, or
				// counts its unshipped bytes as lost.
				v, ok := l.recent[fileKey(as.topic, as.file)]
				if !ok {
					continue // not discovered here (yet): nothing to read from
				}
				f = v.SeenFile
			}
			fr = newFileRun(as.topic, as.file, key, as.createRev, f.Path, f.Identity, entry.Config)
			fr.size = f.Size
			l.takeHeld(fr)
			l.runs[key] = fr
		}
		if fr.cancel != nil && fr.cfgRev != entry.ModRevision {
			// The config key was written again: restart with it if its
			// content changed (comparing only when the revision moved).
			if sameConfig(fr.cfg, entry.Config) {
				fr.cfgRev = entry.ModRevision
			} else {
				l.stopTailer(fr) // restart below with the new config
			}
		}
		if fr.cancel == nil && !fr.finished && !fr.fenced && !fr.releasing {
			// The tailer goroutine reads fr.cfg: it changes only while none runs.
			fr.cfg, fr.cfgRev = entry.Config, entry.ModRevision
			l.startTailer(ctx, fr)
		}
	}
	l.a.m.tailers.Set(float64(l.countTailers()))
}

func (l *loop) countTailers() int {
	n := 0
	for _, fr := range l.runs {
		if fr.cancel != nil {
			n++
		}
	}
	return n
}

// startTailer runs fr's tailer in its own goroutine.
func (l *loop) startTailer(ctx context.Context, fr *fileRun) {
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	fr.cancel, fr.done = cancel, done
	go func() {
		err := l.tail(tctx, fr)
		// done closes before the exit is reported: stopTailer waits on it
		// from the loop, which may not be receiving exits meanwhile.
		close(done)
		select {
		case l.tailerExits <- tailerExit{fr: fr, err: err, done: done}:
		case <-ctx.Done():
		}
	}()
}

// tail reads fr's checkpoint and runs its tailer.
func (l *loop) tail(ctx context.Context, fr *fileRun) error {
	a := l.a
	offset, fromCheckpoint, err := l.startOffset(ctx, fr)
	if err != nil {
		return err
	}
	fr.mu.Lock()
	fr.started = true
	if fr.nextSeq == 0 {
		fr.acked = offset
		if fromCheckpoint {
			fr.written = offset
		}
	} else {
		offset = fr.acked // a restart: resume after what was acknowledged
		if n := fr.pending.len(); n > 0 {
			offset = fr.pending.at(n - 1).end // records in flight are not read twice
		}
	}
	fr.mu.Unlock()
	sink := newLineSink(a, fr)
	defer sink.close()
	var js *joinedSink
	flush := func() error { return sink.flush(ctx) }
	if fr.cfg.Multiline != nil {
		if js, err = newJoinedSink(sink, fr.cfg.Multiline); err != nil {
			return err
		}
		flush = func() error { return js.flushSink(ctx) }
	}
	tl, err := tailer.New(tailer.Config{
		Path: fr.path, File: fr.held, Identity: fr.identity,
		// A file the globs no longer match (found by identity after a
		// rotation) is finished once read to its end and idle.
		Rotated: !a.scanner.Matches(fr.cfg, fr.path), Shared: fr.cfg.Shared, FingerprintBytes: a.cfg.FingerprintBytes,
		Offset: offset, MaxLineBytes: fr.cfg.MaxLineBytes, Truncate: fr.cfg.LongLines == topics.LongLinesTruncate,
		RotatedIdle: a.cfg.RotatedIdle, Poll: !a.cfg.TailInotify, PartialTimeout: a.cfg.PartialLineTimeout, Logger: a.log.With("topic", fr.topic, "file", fr.key),
		OnTruncate: func(old int64) {
			a.log.Warn("file truncated; shipping it again from 0", "topic", fr.topic, "path", fr.path, "old_offset", old)
		},
		Flush: flush,
	})
	if err != nil {
		return err // fr.held stays for the next start
	}
	fr.held = nil // the tailer's now
	if js == nil {
		return tl.Run(ctx, func(line tailer.Line) error { return sink.emit(ctx, line) })
	}
	tctx, stop := context.WithCancel(ctx)
	timeouts := make(chan struct{})
	go func() {
		defer close(timeouts)
		js.runTimeouts(tctx)
	}()
	err = tl.Run(ctx, func(line tailer.Line) error { return js.emit(ctx, line) })
	stop()
	<-timeouts
	if errors.Is(err, tailer.ErrFinished) || errors.Is(err, tailer.ErrGone) {
		// Nothing more will come: the last event is complete.
		if ferr := js.flush(ctx, false); ferr != nil {
			return ferr
		}
	}
	return err
}

// startOffset is the checkpoint of the file if it belongs to this identity,
// or where start_at says for a file never seen.
func (l *loop) startOffset(ctx context.Context, fr *fileRun) (int64, bool, error) {
	cp, found, err := l.getCheckpoint(ctx, fr.topic, fr.key)
	if err != nil {
		return 0, false, err
	}
	if found {
		return cp.Offset, true, nil
	}
	if fr.cfg.StartAt == topics.StartEnd {
		fi, err := os.Stat(fr.path)
		if err != nil {
			return 0, false, fmt.Errorf("stat %s: %w", fr.path, err)
		}
		return fi.Size(), false, nil
	}
	return 0, false, nil
}

func (l *loop) stopTailer(fr *fileRun) {
	if fr.cancel == nil {
		return
	}
	fr.cancel()
	<-fr.done
	fr.cancel = nil
}

// abandon stops fr at once and fences it: nothing more is written for it.
func (l *loop) abandon(fr *fileRun) {
	fr.fenced = true
	l.stopTailer(fr)
	fr.closeHeld()
	l.a.m.bytesBehind.DeleteLabelValues(fr.topic, fr.key)
}

func (l *loop) stopAllTailers() {
	for _, fr := range l.runs {
		if fr.cancel != nil {
			fr.cancel()
		}
	}
	for _, fr := range l.runs {
		if fr.cancel != nil {
			<-fr.done
			fr.cancel = nil
		}
	}
}

func (l *loop) onTailerExit(ex tailerExit) {
	fr := ex.fr
	if fr.cancel == nil || fr.done != ex.done {
		return // stopped on purpose (perhaps restarted since)
	}
	fr.cancel = nil
	err := ex.err
	switch {
	case errors.Is(err, context.Canceled):
	case errors.Is(err, tailer.ErrFinished):
		// Listed a while longer (finishedGrace); the periodic checkpoint
		// writes its end meanwhile.
		fr.finished, fr.finishedAt = true, time.Now()
	case errors.Is(err, tailer.ErrGone):
		fr.finished = true
		l.addProblem(fr.topic, fr.path, "rewritten", err.Error())
		l.triggerScan()
	case errors.Is(err, tailer.ErrMismatch), errors.Is(err, fs.ErrNotExist):
		// Deleted (or replaced) before it could be opened: what it held
		// past the checkpoint is lost. Count it, never silently.
		fr.finished = true
		// The last size a scan saw is what the file held.
		lost := fr.lastSize() - fr.ackedOffset()
		if lost > 0 {
			l.lostBytes += lost
			l.a.m.lostBytes.WithLabelValues(fr.topic).Add(float64(lost))
			l.addProblem(fr.topic, fr.path, "lost-bytes", fmt.Sprintf("%d bytes deleted before they were shipped: %v", lost, err))
		}
		l.a.log.Error("file gone before it was shipped", "topic", fr.topic, "path", fr.path, "lost_bytes", lost, "err", err)
		l.triggerScan()
	default:
		l.addProblem(fr.topic, fr.path, discovery.KindUnreadable, err.Error())
		l.a.log.Error("tailer failed; retrying at the next scan", "topic", fr.topic, "path", fr.path, "err", err)
	}
	l.a.m.tailers.Set(float64(l.countTailers()))
}

func (l *loop) addProblem(topic, path, kind, msg string) {
	k := problemKey{kind: kind, topic: topic, path: path}
	if p, ok := l.problems[k]; ok && p.Error == msg {
		return
	}
	l.problems[k] = protocol.Problem{Topic: topic, Path: path, Kind: kind, Error: msg, Since: time.Now().UTC()}
}

// release hands a revoked file back: stop reading, wait for Kafka's acks,
// then write the final offset and delete the assignment in one Txn guarded
// by the assignment's create revision.
func (l *loop) release(fr *fileRun) {
	fr.releasing = true
	if fr.cancel != nil {
		fr.cancel()
	}
	done, cancelled := fr.done, fr.cancel != nil
	fr.cancel = nil
	a := l.a
	l.releasing.Add(1)
	go func() {
		defer l.releasing.Done()
		if cancelled {
			<-done
		}
		ctx, cancel := context.WithTimeout(context.Background(), a.cfg.StopTimeout+5*time.Second)
		defer cancel()
		if err := fr.waitDrained(ctx); err != nil {
			a.log.Warn("release: Kafka did not acknowledge everything in time; releasing at the acknowledged offset",
				"topic", fr.topic, "path", fr.path, "err", err)
		}
		ops := []clientv3.Op{clientv3.OpDelete(fr.assignKey)}
		if off, size, due := fr.checkpointDue(); due && !fr.identityUnknown() {
			ops = append(ops, clientv3.OpPut(a.cfg.Space.Offset(fr.topic, fr.key), string(l.checkpointValue(fr, off, size))))
		}
		resp, err := a.cfg.Client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(fr.assignKey), "=", fr.createRev)).
			Then(ops...).Commit()
		result := "released"
		switch {
		case err != nil:
			result = "error"
			a.log.Error("release failed", "topic", fr.topic, "file", fr.key, "err", err)
		case !resp.Succeeded:
			result = "fenced"
		default:
			a.log.Info("file released", "topic", fr.topic, "path", fr.path, "offset", fr.ackedOffset())
		}
		a.m.releases.WithLabelValues(result).Inc()
		select {
		case l.releases <- releaseDone{fr: fr, result: result}:
		case <-l.stopped:
		}
	}()
}

func (fr *fileRun) identityUnknown() bool { return fr.identity.Fingerprint == "" }

func (l *loop) onRelease(rd releaseDone) {
	fr := rd.fr
	if cur, ok := l.runs[fr.assignKey]; ok && cur == fr {
		delete(l.runs, fr.assignKey)
	}
	fr.closeHeld()
	l.a.m.bytesBehind.DeleteLabelValues(fr.topic, fr.key)
	if rd.result == "error" {
		// The assignment is still revoking: try again at the next change.
		fr.releasing = false
		l.triggerScan()
	}
}

// scan evaluates every topic on this host and updates the heartbeats and
// the agent status.
func (l *loop) scan() {
	if !l.topicsLoaded || !l.assignsLoaded {
		return
	}
	a := l.a
	l.expireHeld()
	served := map[string]bool{}
	problems := map[problemKey]protocol.Problem{}
	keep := func(p protocol.Problem) {
		k := problemKey{kind: p.Kind, topic: p.Topic, path: p.Path}
		if old, ok := l.problems[k]; ok && old.Error == p.Error {
			p.Since = old.Since
		} else {
			p.Since = time.Now().UTC()
		}
		problems[k] = p
	}
	refusedCount := 0
	for _, name := range slices.Sorted(maps.Keys(l.topics)) {
		e := l.topics[name]
		if e.Err != nil {
			refusedCount++
			keep(protocol.Problem{Topic: name, Kind: discovery.KindRefused, Error: e.Err.Error()})
			continue
		}
		res := a.scanner.Scan(name, e.Config)
		for _, p := range res.Problems {
			keep(p)
		}
		l.refused[name] = res.Refused != nil
		if res.Refused != nil {
			refusedCount++
			a.log.Error("topic refused on this host", "topic", name, "err", res.Refused)
			delete(l.seen, name)
			continue
		}
		files := map[string]protocol.SeenFile{}
		for _, f := range res.Files {
			files[f.Key] = f
		}
		for _, fr := range l.runs {
			if f, ok := files[fr.key]; ok && fr.topic == name {
				fr.mu.Lock()
				fr.size = max(fr.size, f.Size)
				fr.mu.Unlock()
			}
		}
		// Files still being read after they left the globs (rotated to a
		// name the globs do not match) stay in the heartbeat until done,
		// and a little longer: until the other agents' scans can have seen
		// the final checkpoint (see reportUnfinished).
		for _, fr := range l.runs {
			finishing := !fr.finished || time.Since(fr.finishedAt) < l.finishedGrace()
			if fr.topic == name && finishing && !fr.fenced && !fr.releasing && !fr.identityUnknown() {
				if _, ok := files[fr.key]; !ok {
					files[fr.key] = protocol.SeenFile{Key: fr.key, Path: fr.path, Size: fr.ackedOffset(), Identity: fr.identity}
				}
			}
		}
		if !l.seeded[name] {
			l.seeded[name] = l.seedFromCheckpoints(name, e.Config)
		}
		dirs := dirIndex{}
		l.reportUnfinished(name, e.Config, files, dirs)
		l.countGoneAssigned(name, files, dirs)
		l.noteVanished(name, e.Config, files)
		l.seen[name] = files
		a.m.filesSeen.WithLabelValues(name).Set(float64(len(files)))
		if len(files) == 0 {
			continue
		}
		served[name] = true
		a.reg.Set(a.cfg.Space.Heartbeat(name, a.cfg.ID), l.heartbeatValue(name, files))
	}
	for name := range l.seen {
		if _, ok := l.topics[name]; !ok || l.refused[name] {
			delete(l.seen, name)
		}
	}
	// Topics this agent no longer serves (no files, refused, deleted) lose
	// their heartbeat.
	for name := range l.heartbeats {
		if !served[name] {
			a.reg.Delete(a.cfg.Space.Heartbeat(name, a.cfg.ID))
		}
	}
	l.heartbeats = served
	if l.watcher != nil {
		// Topics accepted here, and directories that appeared since.
		watched := map[string]topics.Config{}
		for name, e := range l.topics {
			if e.Err == nil && !l.refused[name] && !e.Config.Paused {
				watched[name] = e.Config
			}
		}
		l.watcher.SetTopics(watched)
		a.m.watchedDirs.Set(float64(len(l.watcher.Dirs())))
	}
	// Runtime problems (lost bytes, rewritten files, tailer errors) persist.
	for k, p := range l.problems {
		if k.kind != discovery.KindRefused && k.kind != discovery.KindUnreadable && k.kind != discovery.KindOutside {
			problems[k] = p
		}
	}
	l.problems = problems
	a.m.topicsRefused.Set(float64(refusedCount))
	l.writeStatus()
}

// countGoneAssigned counts the unshipped bytes of the files assigned to
// this agent for topic that nobody can read any more: not listed (neither
// under the globs nor as rotated and unfinished, see reportUnfinished), not
// being read here, known by identity (from a scan or a checkpoint) but not
// found next to where they were: deleted while the agent was down.
func (l *loop) countGoneAssigned(topic string, files map[string]protocol.SeenFile, dirs dirIndex) {
	for _, as := range l.assigns {
		if as.topic != topic || as.value.State != protocol.StateActive {
			continue
		}
		if _, ok := files[as.file]; ok {
			continue
		}
		if fr, ok := l.runs[l.a.cfg.Space.Assign(l.a.cfg.ID, as.topic, as.file)]; ok && (fr.finished || fr.cancel != nil) {
			continue // finished, or being read
		}
		v, ok := l.recent[fileKey(topic, as.file)]
		if !ok {
			continue // identity unknown: nothing to look for
		}
		if _, found := dirs.get(filepath.Dir(v.Path))[v.Identity.Inode]; !found {
			l.countLostAssigned(as)
		}
	}
}

// readCheckpoint reads a file's checkpoint (bounded to 5 s), for the
// control loop's best-effort uses: any failure reads as "none".
func (l *loop) readCheckpoint(topic, file string) (protocol.Checkpoint, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp, found, err := l.getCheckpoint(ctx, topic, file)
	return cp, found && err == nil
}

// getCheckpoint reads a file's checkpoint. An etcd error is an error; an
// undecodable value is logged and reads as none.
func (l *loop) getCheckpoint(ctx context.Context, topic, file string) (protocol.Checkpoint, bool, error) {
	okey := l.a.cfg.Space.Offset(topic, file)
	resp, err := l.a.cfg.Client.Get(ctx, okey)
	if err != nil {
		return protocol.Checkpoint{}, false, fmt.Errorf("read checkpoint %s: %w", okey, err)
	}
	if len(resp.Kvs) == 0 {
		return protocol.Checkpoint{}, false, nil
	}
	var cp protocol.Checkpoint
	if err := protocol.Unmarshal(okey, resp.Kvs[0].Value, &cp); err != nil {
		l.a.log.Error("checkpoint unreadable; treated as none", "key", okey, "err", err)
		return protocol.Checkpoint{}, false, nil
	}
	return cp, true, nil
}

// countLostAssigned counts, once per assignment, the unshipped bytes of an
// assigned file that no longer exists anywhere this agent can see (deleted
// while the agent was down): its checkpoint's last size minus its offset.
func (l *loop) countLostAssigned(as assignment) {
	key := fmt.Sprintf("%s/%s@%d", as.topic, as.file, as.createRev)
	if l.lostCounted[key] {
		return
	}
	l.lostCounted[key] = true
	cp, ok := l.readCheckpoint(as.topic, as.file)
	if !ok || cp.Size <= cp.Offset {
		return
	}
	lost := cp.Size - cp.Offset
	l.lostBytes += lost
	l.a.m.lostBytes.WithLabelValues(as.topic).Add(float64(lost))
	l.addProblem(as.topic, cp.Path, "lost-bytes", fmt.Sprintf("at least %d bytes deleted before they were shipped", lost))
	l.a.log.Error("assigned file deleted before it was shipped", "topic", as.topic, "path", cp.Path, "lost_bytes", lost)
}

type vanishedFile struct {
	protocol.SeenFile
	at time.Time
	// covered is the size of the file (outside the globs) that a
	// checkpoint was seen to cover: its checkpoint is read again only if
	// it grows past it (its writer may still append after the rename).
	covered int64
}

// finishedGrace is how long a file read to its end stays in the heartbeat:
// a checkpoint interval for its final checkpoint, then two scans of the
// other agents to see it, so that they stop reporting it before this agent
// does and the coordinator has no reason to hand it to one of them.
func (l *loop) finishedGrace() time.Duration {
	return l.a.cfg.CheckpointInterval + 2*l.a.cfg.ScanInterval
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
func (l *loop) reportUnfinished(topic string, cfg topics.Config, files map[string]protocol.SeenFile, dirs dirIndex) {
	prefix := topic + "/"
	var candidates []string
	found := map[string]protocol.SeenFile{}
	// Held files first: their descriptor gives the size even when the file
	// has no name left.
	for _, h := range l.held {
		if h.topic != topic {
			continue
		}
		if _, listed := files[h.Key]; listed {
			continue
		}
		fi, err := h.fd.Stat()
		if err != nil {
			continue
		}
		candidates = append(candidates, h.Key)
		f := h.SeenFile
		f.Size = fi.Size()
		found[h.Key] = f
	}
	for k, v := range l.recent {
		key, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if _, listed := found[key]; listed {
			continue
		}
		if _, listed := files[key]; listed {
			continue
		}
		e, ok := dirs.get(filepath.Dir(v.Path))[v.Identity.Inode]
		if !ok || (v.covered > 0 && e.size <= v.covered) {
			continue // gone (noteVanished accounts for it), or shipped
		}
		size, ok := sizeIfSame(e.path, v.Identity, l.a.cfg.FingerprintBytes, cfg.Shared)
		if !ok {
			continue // the inode is another file's now
		}
		candidates = append(candidates, key)
		found[key] = protocol.SeenFile{Key: key, Path: e.path, Size: size, Identity: v.Identity}
	}
	if len(candidates) == 0 {
		return
	}
	offsets, err := l.readCheckpoints(topic, candidates)
	if err != nil {
		// Report them: a file reported once too often costs a handover;
		// one left out may be orphaned.
		l.a.log.Warn("cannot read checkpoints of rotated files; reporting them", "topic", topic, "files", len(candidates), "err", err)
	}
	for _, key := range candidates {
		f := found[key]
		if off, ok := offsets[key]; ok && off >= f.Size {
			// Shipped to its end. A rotated file that still grows is its
			// owner's to finish (it reads until the file is idle).
			v := l.recent[fileKey(topic, key)]
			v.covered = f.Size
			l.recent[fileKey(topic, key)] = v
			if h, ok := l.held[fileKey(topic, key)]; ok {
				h.fd.Close() // another agent shipped it
				delete(l.held, fileKey(topic, key))
				l.a.m.filesHeld.Set(float64(len(l.held)))
			}
			continue
		}
		files[key] = f
		// This agent finished it, and its writer appended again after it
		// had been idle for --rotated-idle: read on from the acknowledged
		// offset (reconcile starts the tailer again).
		if fr, ok := l.runs[l.a.cfg.Space.Assign(l.a.cfg.ID, topic, key)]; ok && fr.finished && !fr.finishedAt.IsZero() &&
			!fr.fenced && !fr.releasing && fr.ackedOffset() < f.Size {
			l.a.log.Info("finished rotated file grew again; reading on", "topic", topic, "path", f.Path, "offset", fr.ackedOffset(), "size", f.Size)
			fr.finished, fr.finishedAt = false, time.Time{}
			fr.path = f.Path
		}
	}
}

// seedFromCheckpoints remembers, as if a scan had seen them, the files of
// topic that have a checkpoint (this agent's own, on a local topic), so
// that reportUnfinished finds those rotated out of the globs and not
// shipped to their end, whoever was reading them. It reports whether the
// checkpoints could be read.
func (l *loop) seedFromCheckpoints(topic string, cfg topics.Config) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	prefix := l.a.cfg.Space.OffsetsPrefix() + topic + "/"
	resp, err := l.a.cfg.Client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		l.a.log.Warn("cannot read the topic's checkpoints; retrying at the next scan", "topic", topic, "err", err)
		return false
	}
	now := time.Now()
	for _, kv := range resp.Kvs {
		var cp protocol.Checkpoint
		if protocol.Unmarshal(string(kv.Key), kv.Value, &cp) != nil || cp.Identity.Fingerprint == "" || cp.Path == "" {
			continue
		}
		if !cfg.Shared && cp.Agent != l.a.cfg.ID {
			continue // another host's file
		}
		key := strings.TrimPrefix(string(kv.Key), prefix)
		if _, known := l.recent[fileKey(topic, key)]; !known {
			l.recent[fileKey(topic, key)] = vanishedFile{SeenFile: protocol.SeenFile{Key: key, Path: cp.Path, Identity: cp.Identity}, at: now}
		}
	}
	return true
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
func sizeIfSame(path string, id protocol.FileIdentity, fingerprintBytes int, shared bool) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	got, err := fileid.Of(f, fingerprintBytes)
	if err != nil || !fileid.Same(got, id, shared) {
		return 0, false
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// readCheckpoints reads the offsets of files of topic, in Txns of at most
// maxTxnOps reads (bounded to 5 s in all). A missing or unreadable
// checkpoint is left out.
func (l *loop) readCheckpoints(topic string, files []string) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[string]int64{}
	for chunk := range slices.Chunk(files, maxTxnOps) {
		ops := make([]clientv3.Op, len(chunk))
		for i, f := range chunk {
			ops[i] = clientv3.OpGet(l.a.cfg.Space.Offset(topic, f))
		}
		resp, err := l.a.cfg.Client.Txn(ctx).Then(ops...).Commit()
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
				out[chunk[i]] = cp.Offset
			}
		}
	}
	return out, nil
}

// vanishedMemory is how long a file that left the scan is remembered for a
// late assignment.
const vanishedMemory = 10 * time.Minute

// noteVanished remembers the files of this scan and handles those of the
// last scan that are gone. On a local topic nobody else can account for a
// deleted file: if this agent is not reading it, its unshipped bytes are
// lost now.
func (l *loop) noteVanished(topic string, cfg topics.Config, files map[string]protocol.SeenFile) {
	now := time.Now()
	for k, v := range l.recent {
		if now.Sub(v.at) > vanishedMemory {
			delete(l.recent, k)
		}
	}
	for key, f := range files {
		v := l.recent[fileKey(topic, key)]
		v.SeenFile, v.at = f, now
		l.recent[fileKey(topic, key)] = v
	}
	for key, f := range l.seen[topic] {
		if _, still := files[key]; still {
			continue
		}
		if _, err := os.Stat(f.Path); err == nil {
			continue // renamed out of the globs, not deleted
		}
		_, running := l.held[fileKey(topic, key)]
		for _, fr := range l.runs {
			running = running || (fr.topic == topic && fr.key == key)
		}
		if running {
			continue // the tailer holds it open and reads it to its end
		}
		if !cfg.Shared {
			l.countLost(topic, f)
			// Counted once: an assignment arriving later must not start a
			// tailer that fails and counts the same bytes again.
			delete(l.recent, fileKey(topic, key))
		}
	}
}

// countLost counts the bytes of a deleted file past its checkpoint.
func (l *loop) countLost(topic string, f protocol.SeenFile) {
	offset := int64(0)
	if cp, ok := l.readCheckpoint(topic, f.Key); ok {
		offset = cp.Offset
	}
	if lost := f.Size - offset; lost > 0 {
		l.lostBytes += lost
		l.a.m.lostBytes.WithLabelValues(topic).Add(float64(lost))
		l.addProblem(topic, f.Path, "lost-bytes", fmt.Sprintf("%d bytes deleted before they were shipped", lost))
		l.a.log.Error("file deleted before it was shipped", "topic", topic, "path", f.Path, "lost_bytes", lost)
	}
}

func (l *loop) heartbeatValue(topic string, files map[string]protocol.SeenFile) []byte {
	a := l.a
	hb := protocol.Heartbeat{Agent: a.cfg.ID, Version: a.cfg.Version, Started: a.started.UTC().Truncate(time.Second)}
	// Sizes change with every line; the heartbeat is rewritten only when the
	// set of files changes, so sizes are left out (0).
	list := make([]protocol.SeenFile, 0, len(files))
	for _, f := range files {
		f.Size = 0
		list = append(list, f)
	}
	slices.SortFunc(list, func(x, y protocol.SeenFile) int { return cmp.Compare(x.Key, y.Key) })
	hb.Files = list
	for {
		data, err := protocol.Marshal(&hb)
		if err != nil {
			a.log.Error("encode heartbeat", "topic", topic, "err", err)
			return nil
		}
		if len(data) <= protocol.MaxHeartbeatBytes || len(hb.Files) == 0 {
			return data
		}
		// Too many files for one etcd value: report what fits and say how
		// many were left out; assigned files are kept first.
		drop := max(1, len(hb.Files)/10)
		hb.Truncated += drop
		hb.Files = l.keepAssignedFirst(topic, hb.Files)[:len(hb.Files)-drop]
		a.log.Warn("heartbeat too large; reporting fewer files", "topic", topic, "left_out", hb.Truncated)
	}
}

func (l *loop) keepAssignedFirst(topic string, files []protocol.SeenFile) []protocol.SeenFile {
	assigned := map[string]bool{}
	for _, as := range l.assigns {
		if as.topic == topic {
			assigned[as.file] = true
		}
	}
	out := slices.Clone(files)
	slices.SortStableFunc(out, func(x, y protocol.SeenFile) int {
		switch {
		case assigned[x.Key] == assigned[y.Key]:
			return 0
		case assigned[x.Key]:
			return -1
		}
		return 1
	})
	return out
}

func (l *loop) writeStatus() {
	a := l.a
	v := a.statusValue(l.problems, l.lostBytes)
	if v == nil || bytes.Equal(v, l.lastStatus) {
		return
	}
	l.lastStatus = v
	a.reg.Set(a.cfg.Space.AgentStatus(a.cfg.ID), v)
}

// sameConfig reports whether a running tailer can keep going under cfg.
func sameConfig(a, b topics.Config) bool {
	x, _ := a.Encode()
	y, _ := b.Encode()
	return bytes.Equal(x, y)
}

func sortProblems(ps []protocol.Problem) {
	slices.SortFunc(ps, func(x, y protocol.Problem) int {
		return cmp.Or(strings.Compare(x.Topic, y.Topic), strings.Compare(x.Path, y.Path), strings.Compare(x.Kind, y.Kind))
	})
}
