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
	total := 0
	for _, m := range t.Members {
		total += len(m.Keys)
	}
	seen := make(map[string]struct{}, total)
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
		for _, f := range m.Keys {
			seen[f] = struct{}{}
		}
	}
	st.Files = len(seen)
	var dups []string
	for f, hs := range t.Assigns {
		active := 0
		for _, a := range hs {
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
		if len(hs) > 1 {
			dups = append(dups, f)
		}
	}
	slices.Sort(dups) // rare; a million keys are not sorted for them
	for _, f := range dups {
		hs := t.Assigns[f]
		st.Problems = appendProblem(st.Problems, fmt.Sprintf("file %s has %d assignment keys (%s)", f, len(hs),
			strings.Join(hs.agents(), ", ")))
	}
	for f := range seen {
		if _, ok := t.Assigns[f]; !ok {
			st.Unassigned++
		}
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
