package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// joinStorm adds --join-share more agents within one second, each with
// its local files and (when the shared topic runs) its shared files: the
// time until their local files are assigned, and until the leader settled
// (shared files it moved to the joiners included).
func joinStorm(ctx context.Context, s *sim, r *result) error {
	s.settle(ctx, r, "before the join", time.Time{})
	n := max(1, int(float64(s.o.agents)*s.o.joinShare))
	before := s.fl.snapshot()
	c0 := s.fl.counts()
	start := time.Now()
	joiners, err := s.fl.addAgents(ctx, n, time.Second, true)
	if err != nil {
		return err
	}
	r.add("agents joining", "%d within %s", n, secs(time.Since(start)))
	_, ok := s.await(ctx, func() bool { return s.fl.localDone(joiners) })
	tLocal := time.Since(start)
	if !ok {
		r.fail("the joiners' local files are not all assigned %v after the join started", tLocal)
		return nil
	}
	r.add("join started -> joiners' local files assigned", "%s (%d files)", secs(tLocal), n*s.o.files)
	s.settle(ctx, r, "after the join", start)
	tSettled := time.Since(start)
	r.add("join started -> settled", "%s", secs(tSettled))
	c := s.fl.counts()
	r.add("assignments moved to make room (revoking marks)", "%d moved (%d marks)", moved(before, s.fl.snapshot()), c.revokes-c0.revokes)
	r.add("releases ok / fenced / failed", "%d / %d / %d", c.releasesOK-c0.releasesOK, c.releasesFenced-c0.releasesFenced, c.releasesFailed-c0.releasesFailed)
	r.headline = fmt.Sprintf("%d joiners' files assigned in %s, settled in %s", n, secs(tLocal), secs(tSettled))
	return nil
}

// revokeLeases revokes --revoke-share of the agents' leases at once (their
// heartbeats and status vanish, as on an etcd overload or a network split);
// the agents re-grant and rewrite their keys as the real one does. What the
// leader does about it: assignments deleted, recreated, moved, and the time
// until it settled with every agent back.
func revokeLeases(ctx context.Context, s *sim, r *result) error {
	s.settle(ctx, r, "before the revocation", time.Time{})
	all := s.fl.all()
	n := max(1, int(float64(len(all))*s.o.revokeShare))
	step := len(all) / n
	victims := make([]*simAgent, 0, n)
	for i := 0; i < len(all) && len(victims) < n; i += step {
		victims = append(victims, all[i])
	}
	before := s.fl.snapshot()
	c0 := s.fl.counts()
	old := make([]clientv3.LeaseID, len(victims))
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(victims))
	for i, a := range victims {
		old[i] = a.reg.Lease()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if old[i] != 0 {
				_, errs[i] = a.cli.Revoke(ctx, old[i])
			}
		}()
	}
	wg.Wait()
	revoked := 0
	for i, err := range errs {
		if err == nil && old[i] != 0 {
			revoked++
		}
	}
	r.add("leases revoked", "%d of %d agents in %s", revoked, len(all), secs(time.Since(start)))
	_, ok := s.await(ctx, func() bool {
		for i, a := range victims {
			if l := a.reg.Lease(); l == 0 || l == old[i] {
				return false
			}
		}
		return true
	})
	tBack := time.Since(start)
	if !ok {
		r.fail("the agents have not re-granted their leases %v after the revocation", tBack)
		return nil
	}
	r.add("revoked -> every agent holds a new lease", "%s", secs(tBack))
	s.settle(ctx, r, "after the revocation", start)
	took := time.Since(start)
	r.add("revoked -> settled", "%s", secs(took))
	c := s.fl.counts()
	m := moved(before, s.fl.snapshot())
	r.add("assignments deleted / created / revoking marks", "%d / %d / %d", c.deletes-c0.deletes, c.creates-c0.creates, c.revokes-c0.revokes)
	r.add("assignments moved or recreated", "%d of %d", m, len(before))
	r.headline = fmt.Sprintf("%d leases revoked: %d assignments moved or recreated, settled in %s", revoked, m, secs(took))
	return nil
}
