package plan

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/logferry/logferry/pkg/protocol"
)

// report counts what the state holds for t; planTopic fills in the rest.
func report(t *Topic) protocol.TopicStatus {
	st := protocol.TopicStatus{Topic: t.Name, Members: len(t.Members), Checkpoints: len(t.Offsets), Load: map[string]int{}}
	var lists [][]string
	for _, agent := range slices.Sorted(maps.Keys(t.Members)) {
		m := t.Members[agent]
		if m.Err != nil {
			st.Problems = appendProblem(st.Problems, fmt.Sprintf("agent %s: heartbeat does not decode (its files are left as they are): %v", agent, m.Err))
			continue
		}
		for _, b := range m.Bad {
			st.Problems = appendProblem(st.Problems, b)
		}
		if m.Truncated > 0 {
			st.Problems = appendProblem(st.Problems, fmt.Sprintf("agent %s: heartbeat left out %d files (too large)", agent, m.Truncated))
		}
		lists = append(lists, m.Keys)
	}
	// Every file seen, once: a merge of the members' sorted keys, not a
	// set of them (about 48 MB a pass at a million files).
	forEachDistinct(lists, func(f string) {
		st.Files++
		if _, ok := t.Assigns[f]; !ok {
			st.Unassigned++
		}
	})
	var dups []string
	for f, hs := range t.Assigns {
		active := 0
		for a := range hs.All() {
			st.Load[a.Agent]++
			if a.Revoking() {
				st.Pending++
			} else {
				active++
			}
		}
		if active > 0 {
			st.Assigned++
		}
		if hs.Len() > 1 {
			dups = append(dups, f)
		}
	}
	slices.Sort(dups) // rare; a million keys are not sorted for them
	for _, f := range dups {
		hs := t.Assigns[f]
		st.Problems = appendProblem(st.Problems, fmt.Sprintf("file %s has %d assignment keys (%s)", f, hs.Len(),
			strings.Join(hs.agents(), ", ")))
	}
	if len(st.Load) == 0 {
		st.Load = nil
	}
	return st
}

func appendProblem(ps []string, p string) []string {
	if len(ps) >= protocol.MaxStatusList {
		return ps
	}
	return append(ps, p)
}

// forEachDistinct calls visit once for every string of the sorted lists, in
// order: a k-way merge with a heap of the lists' heads, allocating only the
// heap.
func forEachDistinct(lists [][]string, visit func(string)) {
	h := make([][]string, 0, len(lists))
	for _, l := range lists {
		if len(l) > 0 {
			h = append(h, l)
		}
	}
	less := func(i, j int) bool { return h[i][0] < h[j][0] }
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= len(h) {
				return
			}
			if c+1 < len(h) && less(c+1, c) {
				c++
			}
			if !less(c, i) {
				return
			}
			h[i], h[c] = h[c], h[i]
			i = c
		}
	}
	for i := len(h)/2 - 1; i >= 0; i-- {
		down(i)
	}
	last, started := "", false
	for len(h) > 0 {
		f := h[0][0]
		if !started || f != last {
			visit(f)
			last, started = f, true
		}
		if h[0] = h[0][1:]; len(h[0]) == 0 {
			h[0] = h[len(h)-1]
			h = h[:len(h)-1]
		}
		down(0)
	}
}
