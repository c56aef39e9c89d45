package agent

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/protocol"
)

// problemKey identifies a problem across scans so its Since is kept.
type problemKey struct{ kind, topic, path string }

// problems is what /status/agents/<agent> reports: the problems the scans
// find (replaced at every scan) and those the runs meet (kept), and the
// bytes lost. The inventory and the controller both report here; writing
// the status is a non-blocking Set on the lease.
type problems struct {
	a *Agent

	mu   sync.Mutex
	m    map[problemKey]protocol.Problem
	lost int64
	last []byte
}

func newProblems(a *Agent) *problems { return &problems{a: a, m: map[problemKey]protocol.Problem{}} }

// scanKinds are the problems a scan finds afresh each time; the others
// stay until the agent restarts.
func scanKind(kind string) bool {
	return kind == discovery.KindRefused || kind == discovery.KindUnreadable || kind == discovery.KindOutside || kind == discovery.KindUnidentified ||
		kind == discovery.KindEmpty
}

// add reports a problem a run met.
func (p *problems) add(topic, path, kind, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := problemKey{kind: kind, topic: topic, path: path}
	if old, ok := p.m[k]; ok && old.Error == msg {
		return
	}
	p.m[k] = protocol.Problem{Topic: topic, Path: path, Kind: kind, Error: msg, Since: time.Now().UTC()}
}

// scanned replaces the problems of the scan kinds with found, keeping the
// Since of those already known.
func (p *problems) scanned(found []protocol.Problem) {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := map[problemKey]protocol.Problem{}
	for k, v := range p.m {
		if !scanKind(k.kind) {
			next[k] = v
		}
	}
	for _, f := range found {
		k := problemKey{kind: f.Kind, topic: f.Topic, path: f.Path}
		if old, ok := p.m[k]; ok && old.Error == f.Error {
			f.Since = old.Since
		} else {
			f.Since = time.Now().UTC()
		}
		next[k] = f
	}
	p.m = next
}

func (p *problems) addLost(n int64) {
	p.mu.Lock()
	p.lost += n
	p.mu.Unlock()
}

// write sets the status key if its value changed.
func (p *problems) write() {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.a
	st := protocol.AgentStatus{Agent: a.cfg.ID, Version: a.cfg.Version, LostBytes: p.lost, Problems: []protocol.Problem{}}
	for _, v := range p.m {
		st.Problems = append(st.Problems, v)
	}
	st.Problems, st.Unlisted = listProblems(st.Problems, maxListedProblems)
	data, err := protocol.Marshal(&st)
	if err != nil {
		a.log.Error("encode agent status", "err", err)
		return
	}
	if bytes.Equal(data, p.last) {
		return
	}
	p.last = data
	a.reg.Set(a.cfg.Space.AgentStatus(a.cfg.ID), data)
}

// maxListedProblems bounds the problems the status value lists: at a few
// hundred bytes each, 1,000 stay far below etcd's request limit (1.5 MiB
// by default), which thousands of unreadable files would pass, and the
// status would then never be written at all.
const maxListedProblems = 1000

// listProblems sorts ps (topic-wide problems first within a topic, then by
// path) and keeps the first max; it returns how many it left out.
func listProblems(ps []protocol.Problem, max int) ([]protocol.Problem, int) {
	slices.SortFunc(ps, func(x, y protocol.Problem) int {
		return cmp.Or(strings.Compare(x.Topic, y.Topic), strings.Compare(x.Path, y.Path), strings.Compare(x.Kind, y.Kind))
	})
	if len(ps) <= max {
		return ps, 0
	}
	return ps[:max], len(ps) - max
}

// lostLedger counts the bytes of files deleted or rewritten before they
// were shipped, once per file whoever notices: the tailer that finds its
// file gone, the scan that misses a local file, the expiry of a held
// descriptor of an unlinked file.
type lostLedger struct {
	a     *Agent
	probs *problems

	mu      sync.Mutex
	counted map[fileRef]time.Time
}

func newLostLedger(a *Agent, p *problems) *lostLedger {
	return &lostLedger{a: a, probs: p, counted: map[fileRef]time.Time{}}
}

// lostMemory is how long a counted file is remembered: longer than any
// path by which the same loss could be noticed again (vanishedMemory).
const lostMemory = time.Hour

// count records that lost bytes of ref's file (at path) were never shipped,
// unless that file was counted already; it reports whether it counted.
// Zero or fewer bytes mark the file as accounted for without a report.
func (l *lostLedger) count(ref fileRef, path string, lost int64, what string) bool {
	l.mu.Lock()
	now := time.Now()
	for r, at := range l.counted {
		if now.Sub(at) > lostMemory {
			delete(l.counted, r)
		}
	}
	if _, done := l.counted[ref]; done {
		l.mu.Unlock()
		return false
	}
	l.counted[ref] = now
	l.mu.Unlock()
	if lost <= 0 {
		return false
	}
	l.probs.addLost(lost)
	l.a.m.lostBytes.WithLabelValues(ref.topic).Add(float64(lost))
	l.probs.add(ref.topic, path, "lost-bytes", fmt.Sprintf("%d bytes %s", lost, what))
	l.a.log.Error("file lost before it was shipped", "topic", ref.topic, "path", path, "file", ref.file, "lost_bytes", lost, "what", what)
	return true
}

// countIfAny counts lost bytes only if there are some: a caller that may
// not know the file's size (a run started from a remembered file) leaves
// the file to be counted by whoever does (the scan, from the checkpoint).
func (l *lostLedger) countIfAny(ref fileRef, path string, lost int64, what string) {
	if lost > 0 {
		l.count(ref, path, lost, what)
	}
}

// known reports whether ref's file was counted already.
func (l *lostLedger) known(ref fileRef) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.counted[ref]
	return ok
}
