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
// must also say, in /status/coordinator, written after each pass that
// changes it, that it has planned with every member and file and has no
// handover pending.
func (s *sim) settle(ctx context.Context, r *result, what string) time.Duration {
	why := ""
	took, ok := s.await(ctx, func() bool {
		why = s.unsettledWhy(ctx)
		return why == ""
	})
	if !ok {
		r.fail("%s: not settled after %v: %s", what, took.Round(time.Millisecond), why)
		s.unsettled = true
	}
	return took
}

// unsettledWhy says what is still to be done, "" if nothing.
func (s *sim) unsettledWhy(ctx context.Context) string {
	n := len(s.fl.all())
	if held := s.fl.leasesHeld(); held < n {
		return fmt.Sprintf("%d of %d agents hold their lease with their keys written", held, n)
	}
	c := s.fl.counts()
	files := n * s.o.files
	if c.localKeys != files {
		return fmt.Sprintf("%d of %d local files assigned", c.localKeys, files)
	}
	if s.fl.isShared() {
		if c.sharedAssigned != s.fl.sharedTotal {
			return fmt.Sprintf("%d of %d shared files assigned", c.sharedAssigned, s.fl.sharedTotal)
		}
		files += s.fl.sharedTotal
	}
	if c.revoking > 0 {
		return fmt.Sprintf("%d assignments revoking", c.revoking)
	}
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
