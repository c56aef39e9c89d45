package agent

import (
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
const maxHeld = 1024

// heldFor is a var for the tests only.
var heldFor = time.Minute

// heldFiles is the hand-off between the inventory and the controller: the
// descriptors the directory watcher holds, and the files that have a run.
// The watcher adds descriptors, the inventory expires them, the controller
// hands them to runs; whether a file is held or run is answered under one
// lock, so the inventory never takes a file that a run just took for one
// that nobody reads (and counts it lost). No I/O under the lock.
type heldFiles struct {
	mu    sync.Mutex
	m     map[fileRef]*heldFile
	runs  map[fileRef]bool
	gauge prometheus.Gauge
}

func newHeldFiles(g prometheus.Gauge) *heldFiles {
	return &heldFiles{m: map[fileRef]*heldFile{}, runs: map[fileRef]bool{}, gauge: g}
}

// claim records that ref has a run (the controller, as it creates one).
func (h *heldFiles) claim(ref fileRef) {
	h.mu.Lock()
	h.runs[ref] = true
	h.mu.Unlock()
}

// unclaim records that ref's run is gone.
func (h *heldFiles) unclaim(ref fileRef) {
	h.mu.Lock()
	delete(h.runs, ref)
	h.mu.Unlock()
}

// running reports whether ref has a run.
func (h *heldFiles) running(ref fileRef) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.runs[ref]
}

// busy reports whether ref is held or has a run: someone can still read it.
func (h *heldFiles) busy(ref fileRef) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, held := h.m[ref]
	return held || h.runs[ref]
}

// add holds fd for ref unless one is held already or the set is full; it
// reports whether it kept fd (the caller closes it otherwise).
func (h *heldFiles) add(ref fileRef, f protocol.SeenFile, fd *os.File) (kept, full bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.m[ref]; ok {
		return false, false
	}
	if len(h.m) >= maxHeld {
		return false, true
	}
	h.m[ref] = &heldFile{SeenFile: f, topic: ref.topic, fd: fd, since: time.Now()}
	h.gauge.Set(float64(len(h.m)))
	return true, false
}

// take removes and returns the held file of ref, if any.
func (h *heldFiles) take(ref fileRef) *heldFile {
	h.mu.Lock()
	defer h.mu.Unlock()
	hf, ok := h.m[ref]
	if !ok {
		return nil
	}
	delete(h.m, ref)
	h.gauge.Set(float64(len(h.m)))
	return hf
}

func (h *heldFiles) has(ref fileRef) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.m[ref]
	return ok
}

// of returns the held files of topic (their descriptors stay held).
func (h *heldFiles) of(topic string) map[fileRef]*heldFile {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[fileRef]*heldFile{}
	for ref, hf := range h.m {
		if ref.topic == topic {
			out[ref] = hf
		}
	}
	return out
}

// all returns every held file (their descriptors stay held).
func (h *heldFiles) all() map[fileRef]*heldFile {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[fileRef]*heldFile, len(h.m))
	for ref, hf := range h.m {
		out[ref] = hf
	}
	return out
}

// drop closes and forgets the held file of ref, if it is still hf.
func (h *heldFiles) drop(ref fileRef, hf *heldFile) {
	h.mu.Lock()
	cur, ok := h.m[ref]
	if ok && cur == hf {
		delete(h.m, ref)
		h.gauge.Set(float64(len(h.m)))
	}
	h.mu.Unlock()
	if ok && cur == hf {
		hf.fd.Close()
	}
}

func (h *heldFiles) closeAll() {
	h.mu.Lock()
	m := h.m
	h.m = map[fileRef]*heldFile{}
	h.gauge.Set(0)
	h.mu.Unlock()
	for _, hf := range m {
		hf.fd.Close()
	}
}

// now is the held file with its size as its descriptor sees it now, and
// whether it has no name left (unlinked, or its descriptor cannot even be
// stat'ed): one fstat for both.
func (hf *heldFile) now() (f protocol.SeenFile, unlinked bool) {
	f = hf.SeenFile
	fi, err := hf.fd.Stat()
	if err != nil {
		return f, true
	}
	f.Size = fi.Size()
	st, ok := fi.Sys().(*syscall.Stat_t)
	return f, ok && st.Nlink == 0
}

// closeHeld closes a held descriptor no tailer took. Only while no tailer
// of fr runs.
func (f *fileRun) closeHeld() {
	if f.held != nil {
		f.held.Close()
		f.held = nil
	}
}
