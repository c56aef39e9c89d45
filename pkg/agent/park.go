package agent

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// parking is how a parked file is woken. A file that has not grown for
// --close-inactive ends its tailer (tailer.ErrInactive): the run keeps its
// descriptor and nothing else (no goroutine, no buffer, no inotify watch of
// its own, no timer). Its directory's watch, which the agent has anyway
// to find new files, reports every write, rename and delete in the
// directory: touch marks the parked files of that path, and the controller
// wakes them within milliseconds. Where inotify is unavailable, or its
// queue overflowed, the scans are the fallback (inventory.noteParked): a
// parked file whose size or name changed is woken at the next scan.
//
// A file is registered by its tailer's goroutine, before the last check
// that its file has not changed since the last read (parkRun), so that a
// write in between is not lost: it touches the registration, which the
// controller sees when it parks the run. The controller drops the
// registration when the run leaves stateParked (fileRun.to), and when a
// tailer that registered is stopped before its exit was taken.
type parking struct {
	mu     sync.Mutex
	byPath map[string][]*parkToken // usually one: one topic matching the file
	// touched are registrations whose path changed since they were
	// taken last, for the controller.
	touched []*parkToken
	wake    chan struct{} // capacity 1: "touched is not empty"
}

// parkToken is one parked (or parking) run's registration.
type parkToken struct {
	p    *parking
	fr   *fileRun
	path string
	// end is how much of the file the tailer had read (tailer.ReadEnd): a
	// parked file still this long, at the same path, has not changed.
	end int64
	// Guarded by p.mu.
	isTouched, released bool
}

func newParking() *parking {
	return &parking{byPath: map[string][]*parkToken{}, wake: make(chan struct{}, 1)}
}

// register makes touches of path reach fr. Any goroutine.
func (p *parking) register(fr *fileRun, path string, end int64) *parkToken {
	path = filepath.Clean(path)
	t := &parkToken{p: p, fr: fr, path: path, end: end}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byPath[path] = append(p.byPath[path], t)
	return t
}

// touch says that path was written, created, renamed or deleted. It is
// called for every event of the watched directories, on the directory
// watcher's goroutine: it never blocks, and costs a map lookup when no
// parked file has that path.
func (p *parking) touch(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	toks := p.byPath[filepath.Clean(path)]
	for _, t := range toks {
		p.touchLocked(t)
	}
}

func (p *parking) touchLocked(t *parkToken) {
	if t.isTouched || t.released {
		return
	}
	t.isTouched = true
	p.touched = append(p.touched, t)
	poke(p.wake)
}

// take returns the registrations touched since the last take. Their
// touched flag stays set: a run whose tailer registered, but whose exit
// the controller has not taken yet, is woken when it is parked.
func (p *parking) take() []*parkToken {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.touched
	p.touched = nil
	return t
}

func (t *parkToken) touchedYet() bool {
	t.p.mu.Lock()
	defer t.p.mu.Unlock()
	return t.isTouched
}

// release ends the registration; safe twice.
func (t *parkToken) release() {
	p := t.p
	p.mu.Lock()
	defer p.mu.Unlock()
	if t.released {
		return
	}
	t.released = true
	toks := slices.DeleteFunc(p.byPath[t.path], func(x *parkToken) bool { return x == t })
	if len(toks) == 0 {
		delete(p.byPath, t.path)
	} else {
		p.byPath[t.path] = toks
	}
}

// parked counts the registrations, for tests.
func (p *parking) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, toks := range p.byPath {
		n += len(toks)
	}
	return n
}

// parkRun registers fr, whose tailer just ended inactive having read end
// bytes of the file at path, and checks that the file did not change
// between that read and the registration: if it did, the registration is
// touched at once. On fr's tailer goroutine, after its tailer returned
// (fr.held is the kept descriptor); the controller takes fr.park after
// the goroutine ended.
func (a *Agent) parkRun(fr *fileRun, path string, end int64) {
	t := a.parking.register(fr, path, end)
	fr.park = t
	if !unchanged(fr.held, path, end) {
		a.parking.mu.Lock()
		a.parking.touchLocked(t)
		a.parking.mu.Unlock()
	}
}

// unchanged reports whether the file open as f is still size bytes long
// and still named path.
func unchanged(f *os.File, path string, size int64) bool {
	if f == nil {
		return false
	}
	ours, err := f.Stat()
	if err != nil || ours.Size() != size {
		return false
	}
	cur, err := os.Stat(path)
	return err == nil && os.SameFile(ours, cur)
}

// onParked is the controller's side of a tailer that ended inactive: the
// run is parked, or, if its file changed since, idle again at once.
func (c *controller) onParked(fr *fileRun) {
	if fr.park == nil {
		// Not registered (no descriptor kept): read on at the next
		// reconcile rather than park a file nothing can wake.
		fr.to(stateIdle)
		return
	}
	fr.to(stateParked)
	fr.shed()
	if fr.park.touchedYet() {
		c.wakeParked(fr, "watch")
	}
}

// onTouched wakes the parked runs whose files changed, and reports
// whether it woke any.
func (c *controller) onTouched() (woke bool) {
	for _, t := range c.a.parking.take() {
		fr := t.fr
		if fr.state != stateParked || fr.park != t || c.runs[fr.ref()] != fr {
			continue // not parked yet (onParked sees the touch), or gone
		}
		c.wakeParked(fr, "watch")
		woke = true
	}
	return woke
}

// wakeParked makes a parked run idle: the reconcile starts its tailer
// again, through the descriptor it kept, from the acknowledged offset.
func (c *controller) wakeParked(fr *fileRun, by string) {
	fr.to(stateIdle)
	c.touched[fr.ref()] = true
	c.a.m.wakes.WithLabelValues(by).Inc()
}
