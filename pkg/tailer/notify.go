package tailer

import (
	"fmt"
	"os"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/nxadm/tail/watch"
	"gopkg.in/tomb.v1"
)

// notifier tells the tailer that its file may have changed. It is
// nxadm/tail's change notification (its watch package: one inotify watch
// through the library's shared watcher, or a stat poll), and nothing else
// of that library: the tailer reads the file itself, through its own
// descriptor and a bounded buffer.
//
// The watch is made on /proc/self/fd/<n>, the tailer's own descriptor,
// rather than on the file's path. nxadm/tail keys its inotify watches and
// their event channels by name; a name that is unique to the descriptor
// means two tailers never share a watch (a rotated file and its successor
// at the same path used to silence each other), and the watch follows the
// file the tailer reads, not whatever the path names next.
//
// A name must not be reused while nxadm/tail still holds a watch under
// it: the tailer closes its descriptor (freeing the number) only after
// stop, which waits until the library removed the watch.
type notifier struct {
	tb      *tomb.Tomb
	changes *watch.FileChanges
	// events is the library's event channel for the name (inotify only);
	// it closes once the watch is removed.
	events <-chan fsnotify.Event
}

// notifyPath names f in a way that stays bound to the open file.
func notifyPath(f *os.File) string { return fmt.Sprintf("/proc/self/fd/%d", f.Fd()) }

// startNotifier watches f for changes from offset on, with inotify unless
// poll is set; if the inotify watch cannot be added (the per-user watch
// limit), it polls instead and says so in the returned error, which is
// only informative.
func startNotifier(f *os.File, offset int64, poll bool) (*notifier, error) {
	name := notifyPath(f)
	var warn error
	if !poll {
		n := &notifier{tb: new(tomb.Tomb)}
		ch, err := watch.NewInotifyFileWatcher(name).ChangeEvents(n.tb, offset)
		if err == nil {
			n.changes, n.events = ch, watch.Events(name)
			return n, nil
		}
		n.tb.Kill(nil)
		warn = fmt.Errorf("inotify watch of %s failed, polling it instead: %w", f.Name(), err)
	}
	n := &notifier{tb: new(tomb.Tomb)}
	ch, err := watch.NewPollingFileWatcher(name).ChangeEvents(n.tb, offset)
	if err != nil {
		return nil, fmt.Errorf("watch %s for changes: %w", f.Name(), err)
	}
	n.changes = ch
	return n, warn
}

// stop ends the notifier's goroutine (nxadm/tail's) and, for an inotify
// watch, waits until the library removed it, so that the descriptor's
// number can be reused; safe on nil and twice.
func (n *notifier) stop() {
	if n == nil {
		return
	}
	n.tb.Kill(nil)
	if n.events != nil { // nil: removed already (a rename), or polling
		for range n.events { // closed by the library's RemoveWatch
		}
		n.events = nil
	}
}

// SetPollInterval sets how often the poll mode stats a followed file.
// nxadm/tail keeps it in a package variable, so it is one setting per
// process: set it before any tailer runs.
func SetPollInterval(d time.Duration) {
	if d > 0 {
		watch.POLL_DURATION = d
	}
}

// InotifyAvailable reports whether this process can get an inotify
// instance. nxadm/tail ends the process if its shared watcher cannot get
// one, so callers check first and fall back to polling.
func InotifyAvailable() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("tailer: inotify unavailable: %w", err)
	}
	return w.Close()
}
