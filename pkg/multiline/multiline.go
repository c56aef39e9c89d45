// Package multiline joins the lines of a file into events the way the
// topic's `multiline` setting says (Filebeat's semantics): a line is a
// continuation when the pattern matches it (or does not, with negate);
// with match "after" a continuation belongs to the line before it, with
// match "before" to the line after it.
//
// Invariants:
//   - Events come out in file order and cover the lines exactly once: an
//     event's Start is its first line's Start, its End its last line's End,
//     and the next event starts at that End. A checkpoint at an event's End
//     therefore never splits an event.
//   - An event holds at most MaxLines lines; a runaway event is cut there
//     (flagged Cut) and the next line starts a new event. Its data is capped
//     at MaxBytes (flagged Truncated); nothing else is dropped.
//   - Parts of a line longer than max_line_bytes (tailer.Line.Part) are
//     joined back without a separator.
//   - The Joiner holds at most one pending event; Flush hands it out (the
//     caller calls it when no line came for the topic's timeout).
package multiline

import (
	"fmt"
	"regexp"

	"github.com/logferry/logferry/pkg/tailer"
	"github.com/logferry/logferry/pkg/topics"
)

// Event is one joined record.
type Event struct {
	Start, End int64
	Data       []byte
	Lines      int
	Cut        bool // MaxLines reached
	Truncated  bool // MaxBytes reached, or a line in it was truncated
	NoNewline  bool // its last line had no newline
}

// Joiner accumulates lines into events. It is not safe for concurrent use.
type Joiner struct {
	re       *regexp.Regexp
	negate   bool
	before   bool
	maxLines int
	maxBytes int

	cur     *Event
	partial bool // the last line added was a part that is not the last
	open    bool // match before: the last line asked for the next one
}

// New builds a Joiner from a validated config; maxBytes caps an event.
func New(m *topics.Multiline, maxBytes int) (*Joiner, error) {
	re, err := regexp.Compile(m.Pattern)
	if err != nil {
		return nil, fmt.Errorf("multiline: pattern %q: %w", m.Pattern, err)
	}
	return &Joiner{re: re, negate: m.Negate, before: m.Match == topics.MatchBefore, maxLines: m.MaxLines, maxBytes: maxBytes}, nil
}

// Add takes the next line and returns the events it completed (zero, one
// or two). Events copy the lines' bytes: l.Data may be reused once Add
// returns (the tailer does).
func (j *Joiner) Add(l tailer.Line) []Event {
	var out []Event
	if j.cur != nil && j.partial {
		// The rest of a split line always belongs to its line.
		j.appendData(l, false)
		j.partial = l.Part > 0 && !l.Last
		return j.closeIfDone(l, out)
	}
	matched := j.re.Match(l.Data) != j.negate
	switch {
	case j.cur == nil:
	case j.before && j.open:
		// The previous line asked to be continued by this one.
	case !j.before && matched:
		// This line continues the event before it.
	default:
		out = append(out, j.take())
	}
	if j.cur != nil && j.cur.Lines >= j.maxLines {
		e := j.take()
		e.Cut = true
		out = append(out, e)
	}
	if j.cur == nil {
		j.cur = &Event{Start: l.Start}
		j.appendData(l, false)
	} else {
		j.appendData(l, true)
	}
	j.cur.Lines++
	j.partial = l.Part > 0 && !l.Last
	j.open = j.before && matched
	return j.closeIfDone(l, out)
}

// closeIfDone ends the event at once when match "before" says no line
// follows it.
func (j *Joiner) closeIfDone(l tailer.Line, out []Event) []Event {
	if j.before && !j.open && !j.partial && j.cur != nil {
		out = append(out, j.take())
	}
	return out
}

func (j *Joiner) appendData(l tailer.Line, newLine bool) {
	e := j.cur
	if newLine {
		e.Data = j.capped(e, append(e.Data, '\n'))
	}
	e.Data = j.capped(e, append(e.Data, l.Data...))
	e.End = l.End
	e.Truncated = e.Truncated || l.Truncated
	e.NoNewline = l.NoNewline
}

func (j *Joiner) capped(e *Event, data []byte) []byte {
	if len(data) > j.maxBytes {
		e.Truncated = true
		return data[:j.maxBytes]
	}
	return data
}

func (j *Joiner) take() Event {
	e := *j.cur
	j.cur, j.partial, j.open = nil, false, false
	return e
}

// Pending reports whether an event waits for more lines.
func (j *Joiner) Pending() bool { return j.cur != nil }

// Flush returns the pending event, if any.
func (j *Joiner) Flush() (Event, bool) {
	if j.cur == nil {
		return Event{}, false
	}
	return j.take(), true
}
