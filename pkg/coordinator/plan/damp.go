package plan

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"
)

// dampGone decides which (topic, agent) pairs whose heartbeat is gone may
// lose their assignments this pass (Options.OwnerGoneRate).
//
// Why: when etcd is overloaded, or the coordinator is cut off from part of
// the fleet, many leases expire at once although their agents are alive and
// come back within seconds. Deleting and handing on all their files in one
// pass is a burst of writes on an etcd that is already struggling, moves
// files twice (away and back), and on local topics makes every returning
// agent start its files again from the last checkpoint. A bounded rate
// tears the first ones down at once (a single crash is handled as fast as
// ever) and leaves the rest to come back untouched, at the price that the
// files of agents that really died wait longer: (files gone) / rate seconds
// for the last one. A grace (Options.OwnerGoneGrace) goes further for
// agents that come back soon: their files are not touched at all until
// they have been gone that long.
func (p *Planner) dampGone(s *State, now time.Time, out *Plan) {
	units := map[goneUnit]int{}
	for _, name := range s.TopicNames() {
		t := s.topics[name]
		if t.Config != nil && (t.Config.Err != nil || t.Config.Config.Paused) {
			continue // frozen: nothing is deleted anyway
		}
		for _, hs := range t.Assigns {
			for a := range hs.All() {
				if t.Members[a.Agent] == nil {
					units[goneUnit{name, a.Agent}]++
				}
			}
		}
	}
	for u := range p.gone {
		if _, ok := units[u]; !ok {
			delete(p.gone, u)
		}
	}
	order := slices.Collect(maps.Keys(units))
	for _, u := range order {
		if _, ok := p.gone[u]; !ok {
			p.gone[u] = goneMemo{since: now}
		}
	}
	slices.SortFunc(order, func(a, b goneUnit) int {
		return cmp.Or(p.gone[a].since.Compare(p.gone[b].since), strings.Compare(a.topic, b.topic), strings.Compare(a.agent, b.agent))
	})
	p.allowGone = make(map[goneUnit]bool, len(order))
	p.goneTopic = map[string]bool{}
	for _, u := range order {
		p.goneTopic[u.topic] = true
	}
	rate := p.opt.OwnerGoneRate
	if rate > 0 && !p.refilled.IsZero() {
		p.tokens = min(rate, p.tokens+rate*now.Sub(p.refilled).Seconds())
	}
	p.refilled = now
	for _, u := range order {
		n := units[u]
		if end := p.gone[u].since.Add(p.opt.OwnerGoneGrace); now.Before(end) {
			// Within the grace: not gone yet, and not charged to the
			// budget. Plan again when it ends.
			out.GoneInGrace += n
			out.NextDeadline = minTime(out.NextDeadline, end)
			continue
		}
		if rate == 0 || p.tokens > 0 {
			// A whole unit at a time, even beyond the budget (which then goes
			// into debt): an agent with more files than a second's worth is
			// still torn down, and the next waits longer.
			p.allowGone[u] = true
			p.tokens -= float64(n)
			continue
		}
		m := p.gone[u]
		if !m.deferred {
			m.deferred = true
			p.gone[u] = m
			out.NewlyDeferred += n
		}
		out.GoneDeferred += n
		out.GoneAgents++
	}
	if out.GoneDeferred > 0 {
		// Plan again once the budget is positive.
		wait := time.Duration((-p.tokens/rate)*float64(time.Second)) + time.Millisecond
		out.NextDeadline = minTime(out.NextDeadline, now.Add(wait))
	}
}

func (p *Planner) goneAllowed(topic, agent string) bool {
	return p.allowGone[goneUnit{topic, agent}]
}

// Rings returns the ring work of every shared topic in s whose ring lags
// its members, for a standby that follows the State to keep the rings warm
// without planning: it creates the topics' assigners (kept for a later
// term) and forgets those of topics that are gone. Members are the agents
// whose heartbeat decodes and lists at least one file.
func (p *Planner) Rings(s *State) ([]RingWork, error) {
	var out []RingWork
	for _, name := range s.TopicNames() {
		t := s.topics[name]
		if t.Config == nil || t.Config.Err != nil || t.Config.Config.Paused || !t.Config.Config.Shared {
			continue
		}
		var members []string
		for agent, m := range t.Members {
			if m.Err == nil && len(m.Keys) > 0 {
				members = append(members, agent)
			}
		}
		slices.Sort(members)
		a, err := p.assigner(name)
		if err != nil {
			return nil, err
		}
		if !a.InSync(members) {
			out = append(out, RingWork{Topic: name, Assigner: a, Members: members})
		}
	}
	p.pruneAssigners(s)
	return out, nil
}
