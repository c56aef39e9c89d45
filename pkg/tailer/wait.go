package tailer

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/nxadm/tail/watch"
)

// maxCheckBackoff bounds how far the safety-net check of a quiet file
// backs off: CheckInterval times this.
const maxCheckBackoff = 8

// waiter is how a tailer waits, while its file is current, for the file
// to change: a notification (nxadm/tail's inotify watch or stat poll), the
// safety-net check (a lost notification costs at most one check interval),
// or a partial last line's timeout. The check starts at CheckInterval and
// doubles while the file stays quiet, up to maxCheckBackoff times it, so
// that thousands of idle files cost few wake-ups; any read resets it.
type waiter struct {
	t      *Tailer
	n      *notifier
	check  time.Duration
	grewAt time.Time // when a read last consumed bytes
	timer  *time.Timer
}

// notifierWarned makes the first notifier failure a warning and the rest
// debug lines: at the inotify watch limit every new file would say it.
var notifierWarned atomic.Bool

// wait returns when the file may have changed, the check is due, ctx is
// done (its error), or a partial last line has waited PartialTimeout since
// the file last grew (errPartialIdle), or the file has not grown for
// Inactive (errInactive). read is what the read before it
// consumed; partial whether a last line without newline is pending.
func (w *waiter) wait(ctx context.Context, read int64, partial bool) error {
	now := time.Now()
	if read > 0 {
		w.grewAt, w.check = now, w.t.cfg.CheckInterval
	}
	d, deadline := w.check, false
	if partial && w.t.cfg.PartialTimeout > 0 {
		left := w.grewAt.Add(w.t.cfg.PartialTimeout).Sub(now)
		if left <= 0 {
			return errPartialIdle
		}
		if left < d {
			d, deadline = left, true
		}
	}
	if w.t.cfg.Inactive > 0 {
		left := w.grewAt.Add(w.t.cfg.Inactive).Sub(now)
		if left <= 0 {
			return errInactive
		}
		if left < d {
			d, deadline = left, true
		}
	}
	if w.n == nil {
		n, err := startNotifier(w.t.f, w.t.Offset(), w.t.cfg.Poll)
		if err != nil {
			lvl := w.t.log.Debug
			if notifierWarned.CompareAndSwap(false, true) {
				lvl = w.t.log.Warn
			}
			if n != nil {
				lvl("no inotify watch for a followed file; polling it", "err", err, "poll_interval", watch.POLL_DURATION)
			} else {
				lvl("no change notification for a followed file; it is read again every check interval", "err", err)
			}
		}
		w.n = n
	}
	var modified, truncated, deleted chan bool
	if w.n != nil && w.n.changes != nil {
		modified, truncated, deleted = w.n.changes.Modified, w.n.changes.Truncated, w.n.changes.Deleted
	}
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-modified:
	case <-truncated:
	case <-deleted:
		// Renamed (inotify), or the descriptor's name vanished: the
		// notifier has ended; the caller's pathState decides what next.
		w.stopNotifier()
	case <-w.timer.C:
		if !deadline {
			w.check = min(2*w.check, maxCheckBackoff*w.t.cfg.CheckInterval)
		}
	}
	return nil
}

// stopNotifier ends the notifier, if any, and the timer.
func (w *waiter) stopNotifier() {
	w.n.stop()
	w.n = nil
	if w.timer != nil {
		w.timer.Stop()
	}
}
