package agent

import (
	"sync/atomic"
	"time"
)

// DefaultMaxStarting is how many files are read from their offset to
// their end at once by default (Config.MaxStarting). A file's catch-up is
// milliseconds, so 16 start 10,000 files in seconds; more would only hold
// more threads (each file being opened or read blocks one in a system
// call: 64 slots made the runtime start 60 threads, which it keeps).
const DefaultMaxStarting = 16

// starts bounds how many tailers are catching up at once: started, and not
// yet at the end of their file. The others wait their turn, idle, in a
// queue (the controller's own), and while any waits, a tailer that reaches
// the end of a file not written in the last second parks it at once
// (tailer.Config.AtEnd, parkAtEnd) instead of following it for
// --close-inactive, so that its goroutine and watch go to the next file.
//
// Why: an agent that starts on a host with 10,000 files (or a rotation
// that touches them all) would otherwise run 10,000 tailers at once, each
// with its goroutines, and keep them for --close-inactive. The Go runtime
// never frees a goroutine's descriptor, and the burst's memory, spread
// over the heap among long-lived objects, comes back to the kernel late
// or never: at 10,000 files the burst was 12 MB of goroutine descriptors
// and a live heap a third larger than the files need. With the bound, the
// peak is that many tailers, whatever the number of files; a file written
// meanwhile is woken by its directory's watch, as any parked file.
//
// A slot is taken by the controller when it starts a tailer (take) and
// given back, once, by the tailer's goroutine (give): at the file's end,
// before a copytruncate copy waits for its original (which may need a
// slot to be read), or when the goroutine ends.
type starts struct {
	limit int64
	inUse atomic.Int64
	// freed is poked whenever a slot is given back.
	freed chan struct{}
	// waiting: the queue is not empty. Set by the controller, read by the
	// tailers at their file's end.
	waiting atomic.Bool

	// peak is the most slots held at once (for tests).
	peak atomic.Int64

	// The controller's own.
	queue  []*fileRun
	queued map[*fileRun]bool
}

func newStarts(limit int) *starts {
	return &starts{limit: int64(limit), freed: make(chan struct{}, 1), queued: map[*fileRun]bool{}}
}

// take gives fr a slot if one is free (or fr holds one already: next
// reserved it); if not, fr joins the queue (once) and take returns false.
// Controller only.
func (s *starts) take(fr *fileRun) bool {
	if fr.slot.Load() {
		return true
	}
	if s.inUse.Load() >= s.limit {
		if !s.queued[fr] {
			s.queued[fr] = true
			s.queue = append(s.queue, fr)
			s.waiting.Store(true)
		}
		return false
	}
	s.hold(fr)
	return true
}

func (s *starts) hold(fr *fileRun) {
	if n := s.inUse.Add(1); n > s.peak.Load() {
		s.peak.Store(n) // only the controller adds
	}
	fr.slot.Store(true)
}

// give returns fr's slot, if it holds one. Any goroutine; safe twice.
func (s *starts) give(fr *fileRun) {
	if fr.slot.CompareAndSwap(true, false) {
		s.inUse.Add(-1)
		poke(s.freed)
	}
}

// next removes from the queue as many runs still waiting (live) as there
// are free slots and reserves a slot for each, for the controller to
// start (take then finds it held); runs that left the queue's purpose
// meanwhile (started, dropped) are dropped from it without taking a
// place. A reserved run the controller does not start gives its slot
// back (controller.releaseReserved), so a slot is never left idle while
// runs wait. Controller only.
func (s *starts) next(live func(*fileRun) bool) []*fileRun {
	var out []*fileRun
	for s.inUse.Load() < s.limit && len(s.queue) > 0 {
		fr := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		delete(s.queued, fr)
		if live(fr) && !fr.slot.Load() {
			s.hold(fr)
			out = append(out, fr)
		}
	}
	if len(s.queue) == 0 {
		// Let go of the array and the map: they held a whole start's
		// runs, and a map never shrinks.
		s.queue, s.queued = nil, map[*fileRun]bool{}
	}
	s.waiting.Store(len(s.queue) > 0)
	return out
}

// writtenLately is how recently a file must have been modified to keep
// its tailer at its end while files wait for a slot: it is being written,
// and parking it would cost a start for each of its next lines (under
// load, a queue that feeds itself).
const writtenLately = time.Second

// parkAtEnd reports whether fr's tailer, at the end of its file (last
// modified at modified), parks it at once: while files wait for a slot
// and the file is not being written. Not a multiline topic's file (an
// event that may continue is complete only after its timeout), and not
// when parking is off.
func (a *Agent) parkAtEnd(fr *fileRun, modified time.Time) bool {
	return a.starts.waiting.Load() && time.Since(modified) >= writtenLately &&
		a.cfg.CloseInactive > 0 && fr.cfg.Multiline == nil
}

// queuedLen is how many runs wait for a slot.
func (s *starts) queuedLen() int { return len(s.queue) }
