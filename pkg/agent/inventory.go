package agent

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// inventory is what this host has to offer: it evaluates the topics' globs,
// takes the files the directory watcher finds, remembers files that
// vanished from the globs, accounts for lost bytes, and writes the
// heartbeats. All of its disk and etcd I/O runs on its own goroutine, never
// on the controller's, which must be free to stop a file at once. It
// publishes full snapshots (never deltas) for the controller, and reads the
// controller's runView, so the two exchange levels, not events.
type inventory struct {
	a       *Agent
	board   *topicBoard
	held    *heldFiles
	lost    *lostLedger
	probs   *problems
	watcher *discovery.Watcher // nil without directory events

	views   atomic.Pointer[runView] // the controller's, latest
	viewNow chan struct{}           // poked when a new view is stored
	scanNow chan struct{}
	// foundQ are the files the watcher held since the inventory last
	// looked, foundNow its poke: the descriptors are in held already.
	foundMu  sync.Mutex
	foundQ   []discovery.Found
	foundNow chan struct{}
	topicsC  chan struct{} // the board's poke
	out      chan *snapshot

	// The inventory goroutine's own.
	topics       map[string]topics.Entry
	topicsLoaded bool
	viewLoaded   bool
	refused      map[string]bool
	seen         map[string]*listing // topic -> what it lists
	// listed is set when seen changed since the last snapshot.
	listed bool
	// The inventory remembers every file seen in the last vanishedMemory:
	// an assignment can arrive after the file left the globs (renamed by
	// rotation: the tailer finds it by inode) or was deleted (the tailer
	// then counts its bytes as lost). A listed file is remembered through
	// its listing, as seen when its topic was last noted (noted: every
	// file listed then was seen then), so a scan of quiet files writes
	// nothing per file; recent holds the files no longer listed, with when
	// they were last seen, and what more is known of a listed one (see
	// remembered). forgotten marks the topics whose listing is older than
	// vanishedMemory (a topic no longer scanned, its directory entry
	// invalid): their files are remembered by recent only.
	recent    map[fileRef]vanishedFile
	noted     map[string]time.Time
	forgotten map[string]bool
	// seeded marks topics whose checkpoints were read into recent, once
	// per run: after a restart the agent remembers nothing else of the
	// files that rotated out of the globs while it was down.
	seeded map[string]bool
	// lostPending are deleted local files whose lost bytes could not be
	// counted yet (their checkpoint could not be read): tried each scan.
	lostPending map[fileRef]protocol.SeenFile
	// changed are finished runs' files that grew again and parked runs'
	// files that changed, by their path now, until the next snapshot.
	changed    map[fileRef]string
	heartbeats map[string]bool // topics with a heartbeat key set
	// lastHB is each topic's last heartbeat value and the listing it was
	// made of (or one with the same paths): a scan that found the same
	// files reuses it rather than sort, encode and compress thousands of
	// entries again.
	lastHB map[string]encodedHeartbeat
	// published is the last snapshot: a scan that changed nothing sends
	// it again rather than copy every file into a new one.
	published *snapshot
	// now is the clock of what the inventory remembers (time.Now; tests
	// move it past vanishedMemory).
	now func() time.Time
	idx *viewIndex // the last view's, when several topics are served
}

type encodedHeartbeat struct {
	listing *listing
	data    []byte
}

// snapshot is the inventory's published state: everything the controller
// needs to know of this host's files. It is never modified once published
// (its maps are shared with the inventory's listings and other snapshots).
type snapshot struct {
	refused map[string]bool
	// files are the files each topic lists in its heartbeat (seen under
	// the globs, held, or rotated out and unfinished): topic -> key -> file.
	files map[string]map[string]protocol.SeenFile
	// recent are files seen lately that are no longer listed.
	recent map[fileRef]protocol.SeenFile
	// changed are finished files that grew again and parked files that
	// changed (grew, shrank, or left their path): read them on, from path.
	changed map[fileRef]string
}

// known is the file of ref as this host knows it: listed, or remembered.
func (s *snapshot) known(ref fileRef) (protocol.SeenFile, bool) {
	if s == nil {
		return protocol.SeenFile{}, false
	}
	if f, ok := s.files[ref.topic][ref.file]; ok {
		return f, true
	}
	f, ok := s.recent[ref]
	return f, ok
}

// runView is the controller's published state for the inventory.
type runView struct {
	loaded   bool                // the assignments were read (since the last fence)
	assigned map[fileRef]bool    // active (not revoking) assignments
	runs     map[fileRef]runInfo // every run
}

type runInfo struct {
	// fr is for its locked accessors and its identity only (set when the
	// run is made, never changed: a copy here was 64 bytes a file).
	fr    *fileRun
	state runState
	since time.Time
	path  string
	// parkedEnd is how much of a parked file was read: a scan that finds
	// another size wakes it.
	parkedEnd int64
}

func newInventory(a *Agent, board *topicBoard, held *heldFiles, lost *lostLedger, probs *problems) *inventory {
	inv := &inventory{
		a: a, board: board, held: held, lost: lost, probs: probs,
		viewNow:  make(chan struct{}, 1),
		scanNow:  make(chan struct{}, 1),
		foundNow: make(chan struct{}, 1),
		topicsC:  board.subscribe(),
		out:      make(chan *snapshot, 1),
		refused:  map[string]bool{}, seen: map[string]*listing{},
		recent: map[fileRef]vanishedFile{}, noted: map[string]time.Time{}, forgotten: map[string]bool{}, seeded: map[string]bool{},
		lostPending: map[fileRef]protocol.SeenFile{}, changed: map[fileRef]string{},
		heartbeats: map[string]bool{}, lastHB: map[string]encodedHeartbeat{},
		now: time.Now,
	}
	inv.views.Store(&runView{})
	return inv
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// setView stores the controller's latest view. Called by the controller.
func (inv *inventory) setView(v *runView) {
	inv.views.Store(v)
	poke(inv.viewNow)
}

// triggerScan asks for a scan soon (any goroutine).
func (inv *inventory) triggerScan() { poke(inv.scanNow) }

// Snapshots delivers the latest snapshot (capacity 1: a new one replaces
// one not yet taken).
func (inv *inventory) Snapshots() <-chan *snapshot { return inv.out }

// Run scans and takes found files until ctx is done.
func (inv *inventory) Run(ctx context.Context) error {
	tick := time.NewTicker(inv.a.cfg.ScanInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-inv.scanNow:
		case <-inv.topicsC:
			inv.topics, inv.topicsLoaded = inv.board.get()
		case <-inv.viewNow:
			loaded := inv.views.Load().loaded
			rescan := loaded && !inv.viewLoaded // the assignments were (re-)read
			inv.viewLoaded = loaded
			if !rescan {
				continue
			}
		case <-inv.foundNow:
			inv.listFound(inv.takeFound())
			continue
		}
		inv.scan(ctx)
	}
}

// publish replaces the snapshot the controller has not taken yet, if any.
// Only the inventory goroutine sends, so the send never blocks. When
// nothing changed since the last snapshot it is sent again: the controller
// looks at what waits for a scan (a failed tailer's retry) at each.
func (inv *inventory) publish() {
	s := inv.published
	switch {
	case s == nil || inv.listed || len(inv.changed) > 0 || !maps.Equal(s.refused, inv.refused) || !inv.sameUnlisted(s.recent):
		s = &snapshot{refused: maps.Clone(inv.refused), files: make(map[string]map[string]protocol.SeenFile, len(inv.seen)),
			recent: map[fileRef]protocol.SeenFile{}}
		for topic, l := range inv.seen {
			s.files[topic] = l.files
		}
		for ref, v := range inv.recent {
			if !inv.isListed(ref) {
				s.recent[ref] = v.SeenFile
			}
		}
		if len(inv.changed) > 0 {
			s.changed = inv.changed
			inv.changed = map[fileRef]string{}
		}
		inv.listed = false
	case len(s.changed) > 0:
		s = &snapshot{refused: s.refused, files: s.files, recent: s.recent} // changed once only
	}
	inv.published = s
	select {
	case <-inv.out:
	default:
	}
	inv.out <- s
}

// isListed reports whether ref's topic lists it.
func (inv *inventory) isListed(ref fileRef) bool {
	l := inv.seen[ref.topic]
	if l == nil {
		return false
	}
	_, ok := l.files[ref.file]
	return ok
}

// sameUnlisted reports whether the files recent remembers that are not
// listed are those of old (a snapshot's).
func (inv *inventory) sameUnlisted(old map[fileRef]protocol.SeenFile) bool {
	n := 0
	for ref, v := range inv.recent {
		if inv.isListed(ref) {
			continue
		}
		if f, ok := old[ref]; !ok || f != v.SeenFile {
			return false
		}
		n++
	}
	return n == len(old)
}

// scan evaluates every topic on this host and updates the heartbeats, the
// agent status and the snapshot.
func (inv *inventory) scan(ctx context.Context) {
	view := inv.views.Load()
	if !inv.topicsLoaded || !view.loaded {
		return
	}
	a := inv.a
	defer func(start time.Time) { a.m.scans.Observe(time.Since(start).Seconds()) }(time.Now())
	// etcd reads of one scan share one deadline: an unreachable etcd slows
	// the scan, never more than this.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	inv.expireHeld(ctx)
	served := map[string]bool{}
	var found []protocol.Problem
	refusedCount := 0
	for _, name := range slices.Sorted(maps.Keys(inv.topics)) {
		e := inv.topics[name]
		if e.Err != nil {
			refusedCount++
			found = append(found, protocol.Problem{Topic: name, Kind: discovery.KindRefused, Error: e.Err.Error()})
			continue
		}
		if !inv.seeded[name] {
			// Before the scan: the checkpoints hold the identities of
			// short files, which the scanner must give again.
			inv.seeded[name] = inv.seedFromCheckpoints(ctx, name, e.Config, view)
		}
		res := a.scanner.Scan(name, e.Config)
		found = append(found, res.Problems...)
		inv.refused[name] = res.Refused != nil
		if res.Refused != nil {
			refusedCount++
			a.log.Error("topic refused on this host", "topic", name, "err", res.Refused)
			inv.dropListing(name)
			continue
		}
		b := buildListing(inv.seen[name], res.Files)
		grace := a.finishedGrace()
		for ref, ri := range inv.runsOf(view, name) {
			if f, ok := b.get(ref.file); ok {
				ri.fr.noteSize(f.Size)
				if ri.state == stateParked && (f.Size != ri.parkedEnd || f.Path != ri.path) {
					inv.changed[ref] = f.Path // missed by the directory watch
				}
				continue
			}
			if ri.state == stateParked {
				// Left its path (rotated, deleted) unseen by the watch:
				// its tailer reads it to its end.
				inv.changed[ref] = ri.path
			}
			// Files still being read after they left the globs (rotated to
			// a name the globs do not match) stay in the heartbeat until
			// done, and a little longer: until the other agents' scans can
			// have seen the final checkpoint (see reportUnfinished).
			if listedWhileRun(ri, grace) {
				b.add(protocol.SeenFile{Key: ref.file, Path: ri.path, Size: ri.fr.ackedOffset(), Identity: ri.fr.identity})
			}
		}
		dirs := dirIndex{}
		inv.reportUnfinished(ctx, name, e.Config, &b, dirs, view)
		l, unchanged := b.listing()
		inv.countGoneAssigned(ctx, name, l.files, dirs, view)
		inv.noteVanished(ctx, name, e.Config, l, unchanged, view)
		if !unchanged {
			inv.seen[name] = l
			inv.listed = true
		}
		a.m.filesSeen.WithLabelValues(name).Set(float64(len(l.files)))
		if len(l.files) == 0 {
			continue
		}
		served[name] = true
		a.reg.Set(a.cfg.Space.Heartbeat(name, a.cfg.ID), inv.heartbeatValue(name, l, view))
	}
	for name := range inv.seen {
		if _, ok := inv.topics[name]; !ok || inv.refused[name] {
			inv.dropListing(name)
		}
	}
	for name := range inv.refused {
		if _, ok := inv.topics[name]; !ok {
			delete(inv.refused, name)
		}
	}
	// Topics this agent no longer serves (no files, refused, deleted) lose
	// their heartbeat.
	for name := range inv.heartbeats {
		if !served[name] {
			a.reg.Delete(a.cfg.Space.Heartbeat(name, a.cfg.ID))
		}
	}
	inv.heartbeats = served
	if inv.watcher != nil {
		// Topics accepted here, and directories that appeared since.
		watched := map[string]topics.Config{}
		for name, e := range inv.topics {
			if e.Err == nil && !inv.refused[name] && !e.Config.Paused {
				watched[name] = e.Config
			}
		}
		inv.watcher.SetTopics(watched)
		a.m.watchedDirs.Set(float64(len(inv.watcher.Dirs())))
	}
	inv.probs.scanned(found)
	a.m.topicsRefused.Set(float64(refusedCount))
	inv.probs.write()
	inv.publish()
}

// listedWhileRun reports whether a run keeps its file in the heartbeat
// when no scan lists it.
func listedWhileRun(ri runInfo, grace time.Duration) bool {
	if ri.fr.identity.Fingerprint == "" {
		return false
	}
	switch ri.state {
	case stateIdle, stateTailing, stateParked:
		return true
	case stateFinished:
		return time.Since(ri.since) < grace
	}
	return false
}

// hold is the directory watcher's callback, on its goroutine: the file is
// held at once, before the inventory lists it (listFound), so a run created meanwhile
// (from a scan that saw the file too) finds the descriptor even if the
// file has lost its name by then. It reports false once ctx is done.
func (inv *inventory) hold(ctx context.Context, fd discovery.Found) bool {
	ref := fileRef{fd.Topic, fd.File.Key}
	kept, full := inv.held.add(ref, fd.File, fd.FD)
	if !kept {
		if full {
			inv.a.log.Warn("too many files found and not assigned yet; leaving this one to the scans",
				"topic", fd.Topic, "path", fd.File.Path, "held", maxHeld)
		}
		fd.FD.Close()
		return true
	}
	// Never blocks: the watcher must be free for the next file, which may
	// live only milliseconds, whatever the inventory is busy with.
	inv.foundMu.Lock()
	inv.foundQ = append(inv.foundQ, fd)
	inv.foundMu.Unlock()
	poke(inv.foundNow)
	return ctx.Err() == nil
}

// takeFound empties the queue of files the watcher held.
func (inv *inventory) takeFound() []discovery.Found {
	inv.foundMu.Lock()
	defer inv.foundMu.Unlock()
	q := inv.foundQ
	inv.foundQ = nil
	return q
}

// listFound lists the files the directory watcher found and holds: at once
// in their topics' heartbeats, so they get their assignments, and their
// tailers, as soon as possible (the controller hands the descriptors to the
// tailers). A burst of new files costs one heartbeat per topic and one
// snapshot, not one per file.
func (inv *inventory) listFound(fds []discovery.Found) {
	a := inv.a
	view := inv.views.Load()
	added := map[string][]protocol.SeenFile{}
	for _, fd := range fds {
		ref := fileRef{fd.Topic, fd.File.Key}
		e, ok := inv.topics[fd.Topic]
		if !ok || e.Err != nil || inv.refused[fd.Topic] || !inv.topicsLoaded {
			a.log.Debug("new file found, not held: its topic is not served here", "topic", fd.Topic, "path", fd.File.Path, "file", fd.File.Key)
			if h := inv.held.take(ref); h != nil {
				h.fd.Close()
			}
			continue
		}
		a.log.Debug("new file found and held open", "topic", fd.Topic, "path", fd.File.Path, "file", fd.File.Key)
		if inv.held.running(ref) || !view.loaded {
			// A run has the file already (it may take the descriptor if its
			// own open fails), or the assignments are not read yet (fenced,
			// or starting): the first scan once they are lists held files.
			continue
		}
		if inv.isListed(ref) || slices.ContainsFunc(added[fd.Topic], func(f protocol.SeenFile) bool { return f.Key == fd.File.Key }) {
			continue
		}
		added[fd.Topic] = append(added[fd.Topic], fd.File)
		inv.recent[ref] = vanishedFile{SeenFile: fd.File, at: inv.now()}
	}
	if len(added) == 0 {
		return
	}
	for topic, fs := range added {
		inv.seen[topic] = inv.seen[topic].with(fs)
		inv.listed = true
		inv.heartbeats[topic] = true
		a.reg.Set(a.cfg.Space.Heartbeat(topic, a.cfg.ID), inv.heartbeatValue(topic, inv.seen[topic], view))
	}
	inv.publish()
}

// expireHeld lets go of descriptors nobody took in time (the file is
// another agent's, or the topic went away). Nobody else can read a local
// file: if it has no name left, what it held is lost.
func (inv *inventory) expireHeld(ctx context.Context) {
	now := time.Now()
	held := inv.held.all()
	for _, ref := range slices.SortedFunc(maps.Keys(held), func(x, y fileRef) int { return cmp.Compare(x.String(), y.String()) }) {
		h := held[ref]
		e, ok := inv.topics[h.topic]
		if ok && e.Err == nil && !inv.refused[h.topic] && now.Sub(h.since) < heldFor {
			continue
		}
		if ok && !e.Config.Shared {
			if f, gone := h.now(); gone {
				inv.countLost(ctx, h.topic, f)
			}
		}
		inv.held.drop(ref, h)
	}
}

func (inv *inventory) heartbeatValue(topic string, l *listing, view *runView) []byte {
	last, ok := inv.lastHB[topic]
	if ok && last.listing == l {
		return last.data
	}
	if ok && maps.EqualFunc(last.listing.files, l.files, func(x, y protocol.SeenFile) bool { return x.Path == y.Path }) {
		last.listing = l // the old listing need not be kept
		inv.lastHB[topic] = last
		return last.data
	}
	data, truncated := inv.encodeHeartbeat(topic, l.files, view)
	if truncated {
		delete(inv.lastHB, topic) // what was left out depends on the assignments too
		return data
	}
	inv.lastHB[topic] = encodedHeartbeat{listing: l, data: data}
	return data
}

// encodeHeartbeat is the value of topic's heartbeat listing files, within
// the size etcd takes, and whether some files had to be left out.
func (inv *inventory) encodeHeartbeat(topic string, files map[string]protocol.SeenFile, view *runView) (_ []byte, truncated bool) {
	a := inv.a
	hb := protocol.Heartbeat{Agent: a.cfg.ID, Version: a.cfg.Version, Started: a.started.UTC().Truncate(time.Second)}
	// Sizes change with every line; the heartbeat is rewritten only when the
	// set of files changes, so sizes are left out, and identities too: no
	// reader needs them (see protocol.SeenFile).
	list := make([]protocol.SeenFile, 0, len(files))
	for _, f := range files {
		list = append(list, protocol.SeenFile{Key: f.Key, Path: f.Path})
	}
	slices.SortFunc(list, func(x, y protocol.SeenFile) int { return cmp.Compare(x.Key, y.Key) })
	hb.Files = list
	for {
		data, err := protocol.MarshalHeartbeat(&hb)
		if err != nil {
			a.log.Error("encode heartbeat", "topic", topic, "err", err)
			return nil, true
		}
		if len(data) <= protocol.MaxHeartbeatBytes || len(hb.Files) == 0 {
			return data, hb.Truncated > 0
		}
		// Too many files for one etcd value: report what fits and say how
		// many were left out; assigned files are kept first.
		drop := max(1, len(hb.Files)/10)
		hb.Truncated += drop
		hb.Files = keepAssignedFirst(topic, hb.Files, view)[:len(hb.Files)-drop]
		a.log.Warn("heartbeat too large; reporting fewer files", "topic", topic, "left_out", hb.Truncated)
	}
}

func keepAssignedFirst(topic string, files []protocol.SeenFile, view *runView) []protocol.SeenFile {
	out := slices.Clone(files)
	slices.SortStableFunc(out, func(x, y protocol.SeenFile) int {
		ax, ay := view.assigned[fileRef{topic, x.Key}], view.assigned[fileRef{topic, y.Key}]
		switch {
		case ax == ay:
			return 0
		case ax:
			return -1
		}
		return 1
	})
	return out
}

// topicBoard holds the topic directories as the watch delivers them, for
// the controller and the inventory: the watch records, each subscriber is
// poked and reads the whole set.
type topicBoard struct {
	mu     sync.Mutex
	m      map[string]topics.Entry
	loaded bool
	subs   []chan struct{}
	ready  chan struct{} // closed once loaded
}

func newTopicBoard() *topicBoard {
	return &topicBoard{m: map[string]topics.Entry{}, ready: make(chan struct{})}
}

// subscribe returns a channel poked after every change. Before any apply.
func (b *topicBoard) subscribe() chan struct{} {
	c := make(chan struct{}, 1)
	b.mu.Lock()
	b.subs = append(b.subs, c)
	b.mu.Unlock()
	return c
}

func (b *topicBoard) apply(ev topics.Event) {
	b.mu.Lock()
	switch ev.Type {
	case topics.Snapshot:
		b.m = map[string]topics.Entry{}
		for _, e := range ev.Entries {
			b.m[e.Name] = e
		}
		if !b.loaded {
			b.loaded = true
			close(b.ready)
		}
	case topics.Changed:
		b.m[ev.Name] = ev.Entry
	case topics.Deleted:
		delete(b.m, ev.Name)
	}
	subs := b.subs
	b.mu.Unlock()
	for _, c := range subs {
		poke(c)
	}
}

// get is a copy of the topics, and whether they were loaded.
func (b *topicBoard) get() (map[string]topics.Entry, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.m), b.loaded
}
