package agent

import (
	"context"
	"maps"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/protocol"
)

// heldFile is a file the directory watcher found and opened, whose
// descriptor the agent keeps until a tailer takes it: a file that lives
// only milliseconds under a name the globs match (app.log, renamed to
// app.log.1 and unlinked at the next rotation) is read through it even if
// its name is gone by the time the assignment arrives.
type heldFile struct {
	protocol.SeenFile
	topic string
	fd    *os.File
	since time.Time
}

// Bounds on held descriptors. A held file is normally taken by its tailer
// within one assignment round trip; one assigned elsewhere (a shared topic)
// is let go after heldFor.
const (
	heldFor = time.Minute
	maxHeld = 1024
)

// fileKey is "topic/file key", the key of the loop's held and recent maps.
func fileKey(topic, file string) string { return topic + "/" + file }

// onFound takes a file the directory watcher found. A new one is held,
// listed at once in the topic's heartbeat, and gets its tailer as soon as
// its assignment arrives.
func (l *loop) onFound(ctx context.Context, fd discovery.Found) {
	e, ok := l.topics[fd.Topic]
	hk := fileKey(fd.Topic, fd.File.Key)
	_, held := l.held[hk]
	_, running := l.runs[l.a.cfg.Space.Assign(l.a.cfg.ID, fd.Topic, fd.File.Key)]
	if !ok || e.Err != nil || l.refused[fd.Topic] || !l.topicsLoaded || !l.assignsLoaded || held || running ||
		len(l.held) >= maxHeld {
		if len(l.held) >= maxHeld && !held && !running {
			l.a.log.Warn("too many files found and not assigned yet; leaving this one to the scans",
				"topic", fd.Topic, "path", fd.File.Path, "held", len(l.held))
		}
		l.a.log.Debug("new file found, not held", "topic", fd.Topic, "path", fd.File.Path, "file", fd.File.Key,
			"already_held", held, "running", running)
		fd.FD.Close()
		return
	}
	l.a.log.Debug("new file found and held open", "topic", fd.Topic, "path", fd.File.Path, "file", fd.File.Key)
	l.held[hk] = &heldFile{SeenFile: fd.File, topic: fd.Topic, fd: fd.FD, since: time.Now()}
	l.a.m.filesHeld.Set(float64(len(l.held)))
	files := l.seen[fd.Topic]
	if files == nil {
		files = map[string]protocol.SeenFile{}
		l.seen[fd.Topic] = files
	}
	if _, listed := files[fd.File.Key]; listed {
		return
	}
	files[fd.File.Key] = fd.File
	l.recent[hk] = vanishedFile{SeenFile: fd.File, at: time.Now()}
	l.heartbeats[fd.Topic] = true
	l.a.reg.Set(l.a.cfg.Space.Heartbeat(fd.Topic, l.a.cfg.ID), l.heartbeatValue(fd.Topic, files))
	l.reconcile(ctx)
}

// takeHeld hands the held descriptor of a file to its run.
func (l *loop) takeHeld(fr *fileRun) {
	hk := fileKey(fr.topic, fr.key)
	h, ok := l.held[hk]
	if !ok {
		return
	}
	delete(l.held, hk)
	l.a.m.filesHeld.Set(float64(len(l.held)))
	fr.held = h.fd
	fr.path = h.Path
}

// expireHeld lets go of descriptors nobody took in time (the file is
// another agent's, or the topic went away).
func (l *loop) expireHeld() {
	now := time.Now()
	for _, hk := range slices.Sorted(maps.Keys(l.held)) {
		h := l.held[hk]
		e, ok := l.topics[h.topic]
		if ok && e.Err == nil && !l.refused[h.topic] && now.Sub(h.since) < heldFor {
			continue
		}
		if ok && !e.Config.Shared {
			if f, gone := h.now(); gone {
				// Nobody else can read a local file: what it held is lost.
				l.countLost(h.topic, f)
			}
		}
		h.fd.Close()
		delete(l.held, hk)
	}
	l.a.m.filesHeld.Set(float64(len(l.held)))
}

func (l *loop) closeAllHeld() {
	for hk, h := range l.held {
		h.fd.Close()
		delete(l.held, hk)
	}
	for _, fr := range l.runs {
		fr.closeHeld()
	}
}

// closeHeld closes a held descriptor no tailer took. Only while no tailer
// of fr runs.
func (fr *fileRun) closeHeld() {
	if fr.held != nil {
		fr.held.Close()
		fr.held = nil
	}
}

// now is the held file with its size as its descriptor sees it now, and
// whether it has no name left (unlinked, or its descriptor cannot even be
// stat'ed): one fstat for both.
func (h *heldFile) now() (f protocol.SeenFile, unlinked bool) {
	f = h.SeenFile
	fi, err := h.fd.Stat()
	if err != nil {
		return f, true
	}
	f.Size = fi.Size()
	st, ok := fi.Sys().(*syscall.Stat_t)
	return f, ok && st.Nlink == 0
}
