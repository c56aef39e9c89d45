package agent

import (
	"bytes"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// assignment is one /assign/<agent>/<P>/<file> key as the agent sees it.
type assignment struct {
	key       string // the etcd key
	createRev int64  // the fence of every write for the file
	value     protocol.Assignment
}

// wantKind is what the agent should do with one assigned file.
type wantKind uint8

const (
	// wantTail: read the file (start a run if the file is known here).
	wantTail wantKind = iota + 1
	// wantPause: keep the run and its checkpoint, read nothing: the topic
	// is paused, invalid, refused on this host or gone.
	wantPause
	// wantRelease: hand the file over (the assignment is revoking).
	wantRelease
)

// want is the desired run of one assigned file.
type want struct {
	kind      wantKind
	assignKey string
	createRev int64
	// For wantTail: the topic's config (and its key's mod revision) and,
	// if known is set, the file as this host last knew it.
	cfg    topics.Config
	cfgRev int64
	file   protocol.SeenFile
	known  bool
}

// desired maps the assignments, the topic directories and the inventory's
// snapshot to the run every assigned file should have. It is pure: no I/O,
// no clock, no state of its own. A run whose file has no entry here, or
// whose entry has another create revision, must stop at once and write
// nothing more (its assignment was deleted, or recreated: a new fence).
func desired(assigns map[fileRef]assignment, tops map[string]topics.Entry, inv *snapshot) map[fileRef]want {
	out := make(map[fileRef]want, len(assigns))
	for ref, as := range assigns {
		out[ref] = desiredOne(ref, as, tops, inv)
	}
	return out
}

// desiredOne is desired's entry for one assignment.
func desiredOne(ref fileRef, as assignment, tops map[string]topics.Entry, inv *snapshot) want {
	w := want{assignKey: as.key, createRev: as.createRev}
	entry, ok := tops[ref.topic]
	switch {
	case as.value.State == protocol.StateRevoking:
		w.kind = wantRelease
	case !ok || entry.Err != nil || entry.Config.Paused || (inv != nil && inv.refused[ref.topic]):
		w.kind = wantPause
	default:
		w.kind = wantTail
		w.cfg, w.cfgRev = entry.Config, entry.ModRevision
		// Not listed: rotated out of the globs, or deleted, after a
		// scan saw it; the tailer finds it by inode next to its old
		// path, or counts its unshipped bytes as lost.
		w.file, w.known = inv.known(ref)
	}
	return w
}

// sameConfig reports whether a running tailer can keep going under cfg.
func sameConfig(a, b topics.Config) bool {
	x, _ := a.Encode()
	y, _ := b.Encode()
	return bytes.Equal(x, y)
}
