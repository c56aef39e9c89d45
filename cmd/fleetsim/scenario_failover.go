package main

import (
	"context"
	"fmt"
	"time"
)

// failover kills the leader with SIGKILL and, right after, starts a
// newcomer agent with local files only (a shared-topic joiner would pull
// files by design, which is not the failover's doing). Measured: the time
// until the standby leads, until the newcomer's files are assigned, and the
// assignments the failover moved, which must be none: the assignment set
// before the kill is compared with the one after the new leader settled,
// and any revoking mark meanwhile counts too.
func failover(ctx context.Context, s *sim, r *result) error {
	s.settle(ctx, r, "before the kill", time.Time{})
	if r.failed != "" {
		return nil
	}
	old, err := s.leaderNow(ctx)
	if err != nil {
		return err
	}
	if old == "" {
		r.fail("no leader to kill")
		return nil
	}
	before := s.fl.snapshot()
	c0 := s.fl.counts()
	start := time.Now()
	if err := s.e.co.kill(old); err != nil {
		return err
	}
	newcomer, err := s.fl.addAgents(ctx, 1, 0, false)
	if err != nil {
		return err
	}
	var leader string
	_, ok := s.await(ctx, func() bool {
		leader, _ = s.leaderNow(ctx)
		return leader != "" && leader != old
	})
	tLead := time.Since(start)
	r.add("killed (kill -9)", "%s, leading %d assignments", old, len(before))
	r.add("coordinator lease TTL", "%s", secs(s.o.coordTTL))
	if !ok {
		r.fail("the standby does not lead %v after the kill", tLead)
		return s.e.co.start(old)
	}
	r.add("kill -> standby leads (election key)", "%s (%s)", secs(tLead), leader)
	_, ok = s.await(ctx, func() bool { return s.fl.localDone(newcomer) })
	tNew := time.Since(start)
	if !ok {
		r.fail("the newcomer's %d files are not assigned %v after the kill", s.o.files, tNew)
		return s.e.co.start(old)
	}
	r.add("kill -> newcomer's files assigned", "%s (%d files)", secs(tNew), s.o.files)
	s.settle(ctx, r, "after the failover", start)
	r.add("kill -> settled", "%s", secs(time.Since(start)))
	c := s.fl.counts()
	n := moved(before, s.fl.snapshot())
	r.add("assignments moved by the failover", "%d (revoking marks %d, keys deleted %d)", n, c.revokes-c0.revokes, c.deletes-c0.deletes)
	if n > 0 || c.revokes > c0.revokes {
		r.fail("the failover moved %d assignments and marked %d revoking; want 0", n, c.revokes-c0.revokes)
	}
	r.headline = fmt.Sprintf("standby leads in %s, newcomer assigned in %s, %d moved", secs(tLead), secs(tNew), n)
	// The pair is whole again for the scenarios after this one: the killed
	// coordinator comes back as the standby.
	return s.e.co.start(old)
}
