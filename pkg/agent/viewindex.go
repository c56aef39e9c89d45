package agent

import (
	"iter"
	"weak"
)

// viewIndex is a view's runs and active assignments by topic. A scan of
// each topic looks at that topic's runs and assignments only: on a host
// serving several topics, going through every run of the host for each
// topic cost topics x files a scan. It is built once per view (the
// controller publishes a new one when its runs change), and holds the
// view weakly: an index must not keep an old view's runs alive.
type viewIndex struct {
	view     weak.Pointer[runView]
	runs     map[string][]fileRef
	assigned map[string][]fileRef // active assignments
}

// index returns view's index, or nil when at most one topic is served:
// the view then holds that topic's files only, and an index would cost
// memory and save nothing.
func (inv *inventory) index(view *runView) *viewIndex {
	if len(inv.topics) < 2 {
		inv.idx = nil
		return nil
	}
	if inv.idx != nil && inv.idx.view.Value() == view {
		return inv.idx
	}
	idx := &viewIndex{view: weak.Make(view), runs: map[string][]fileRef{}, assigned: map[string][]fileRef{}}
	for ref := range view.runs {
		idx.runs[ref.topic] = append(idx.runs[ref.topic], ref)
	}
	for ref, active := range view.assigned {
		if active {
			idx.assigned[ref.topic] = append(idx.assigned[ref.topic], ref)
		}
	}
	inv.idx = idx
	return idx
}

// runsOf yields view's runs of topic.
func (inv *inventory) runsOf(view *runView, topic string) iter.Seq2[fileRef, runInfo] {
	return func(yield func(fileRef, runInfo) bool) {
		if idx := inv.index(view); idx != nil {
			for _, ref := range idx.runs[topic] {
				if !yield(ref, view.runs[ref]) {
					return
				}
			}
			return
		}
		for ref, ri := range view.runs {
			if ref.topic == topic && !yield(ref, ri) {
				return
			}
		}
	}
}

// activeOf yields view's active assignments of topic.
func (inv *inventory) activeOf(view *runView, topic string) iter.Seq[fileRef] {
	return func(yield func(fileRef) bool) {
		if idx := inv.index(view); idx != nil {
			for _, ref := range idx.assigned[topic] {
				if !yield(ref) {
					return
				}
			}
			return
		}
		for ref, active := range view.assigned {
			if ref.topic == topic && active && !yield(ref) {
				return
			}
		}
	}
}
