package main

import (
	"context"
	"fmt"
	"time"

	"github.com/logferry/logferry/pkg/protocol"
)

// settle waits until the fleet and the leader have nothing left to do; a
// scenario that never gets there fails, and the scenarios after it are
// skipped.
//
// The fleet's own view (every lease held, every file assigned, nothing
// revoking) is not enough: files can all be assigned while heartbeats the
// leader has not planned with are still arriving, and the leader acts on
// them later (a failover right then would take the blame). So the leader
// must also say, in /status/coordinator, that it has planned with every
// member and file and has no handover pending, from a pass that started
// after the scenario's change (stim) and after the fleet last changed
// something the leader must see (an agent without its lease and keys, a
// file not yet released): a leader busy for minutes still shows its last
// pass's status, from before the change. Files the fleet's view does not
// yet show assigned are not such a change: the leader wrote those keys,
// and its status counts them; at a million files the fleet's watch lags
// the leader's writes by minutes, and a leader with nothing left to do
// runs no pass that could start after the view caught up. With nothing
// changed (stim zero, the fleet settled from the start) an old pass will
// do: an idle leader runs none. (The coordinators run with
// --status-interval 1s, so a status is never more than a second behind
// its pass.)
func (s *sim) settle(ctx context.Context, r *result, what string, stim time.Time) time.Duration {
	why := ""
	after := stim
	took, ok := s.await(ctx, func() bool {
		if why = s.fleetUnsettled(); why != "" {
			if s.fl.leasesHeld() < len(s.fl.all()) || s.fl.counts().revoking > 0 {
				after = time.Now()
			}
			return false
		}
		why = s.leaderUnsettled(ctx, after)
		return why == ""
	})
	if !ok {
		r.fail("%s: not settled after %v: %s", what, took.Round(time.Millisecond), why)
		s.unsettled = true
	}
	return took
}

// fleetUnsettled says what the fleet's own view still lacks, "" if nothing.
func (s *sim) fleetUnsettled() string {
	n := len(s.fl.all())
	if held := s.fl.leasesHeld(); held < n {
		return fmt.Sprintf("%d of %d agents hold their lease with their keys written", held, n)
	}
	c := s.fl.counts()
	if local := n * s.o.files; c.localKeys != local {
		return fmt.Sprintf("%d of %d local files assigned", c.localKeys, local)
	}
	if s.fl.isShared() && c.sharedAssigned != s.fl.sharedTotal {
		return fmt.Sprintf("%d of %d shared files assigned", c.sharedAssigned, s.fl.sharedTotal)
	}
	if c.revoking > 0 {
		return fmt.Sprintf("%d assignments revoking", c.revoking)
	}
	return ""
}

// files is every file the leader should know: local, and shared once the
// shared topic runs.
func (s *sim) files() int {
	n := len(s.fl.all()) * s.o.files
	if s.fl.isShared() {
		n += s.fl.sharedTotal
	}
	return n
}

// leaderUnsettled says what the leader's status still lacks, "" if nothing;
// its last pass must have started after after, unless that is zero.
func (s *sim) leaderUnsettled(ctx context.Context, after time.Time) string {
	n, files := len(s.fl.all()), s.files()
	leader, err := s.leaderNow(ctx)
	if err != nil || leader == "" {
		return fmt.Sprintf("no leader (%v)", err)
	}
	st, err := s.status(ctx)
	switch {
	case err != nil:
		return err.Error()
	case st.Leader != leader:
		return fmt.Sprintf("/status/coordinator is %s's, the leader is %s", st.Leader, leader)
	case st.Members != n || st.Files != files || st.Assignments != files || st.PendingHandovers != 0:
		return fmt.Sprintf("the leader's status has %d of %d members, %d of %d files, %d of %d assignments, %d handovers pending",
			st.Members, n, st.Files, files, st.Assignments, files, st.PendingHandovers)
	case !after.IsZero() && !st.LastReconcile.After(after):
		return fmt.Sprintf("the leader's last pass started at %s, before the last change at %s",
			st.LastReconcile.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
	}
	return ""
}

// status reads /status/coordinator.
func (s *sim) status(ctx context.Context) (*protocol.CoordinatorStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	key := s.e.ks.CoordinatorStatus()
	resp, err := s.e.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%s not written yet", key)
	}
	var st protocol.CoordinatorStatus
	if err := protocol.Unmarshal(key, resp.Kvs[0].Value, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
