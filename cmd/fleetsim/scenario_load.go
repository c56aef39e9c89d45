package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// checkpointLoad has every agent write checkpoints per the checkpoint model
// for --duration: the keys per second asked and achieved, the Txn latency,
// the leases lost meanwhile, and whether the leader still settles after.
func checkpointLoad(ctx context.Context, s *sim, r *result) error {
	s.settle(ctx, r, "before the checkpoints", time.Time{})
	m := s.o.cp
	agents := s.fl.all()
	busy := 0
	for _, a := range agents {
		a.mu.Lock()
		for ref := range a.assigned {
			if m.busyFile(a.idx, ref) {
				busy++
			}
		}
		a.mu.Unlock()
	}
	lost0, err := s.fl.leaseLosses()
	if err != nil {
		return err
	}
	before := s.fl.snapshot()
	st := &cpStats{}
	cctx, cancel := context.WithTimeout(ctx, s.o.duration)
	defer cancel()
	start := time.Now()
	s.e.sm.take(ctx) // the load's figures start here, after the settling
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.run(cctx, a, s.e.ks, st)
		}()
	}
	// The load's figures end at its deadline; Txns in flight then are
	// cancelled, but under overload some take long to return (seen: many
	// minutes at 1M files), so how long the agents took to stop is shown.
	<-cctx.Done()
	s.e.sm.take(ctx)
	r.from, r.to = start, time.Now()
	elapsed := time.Since(start).Seconds()
	lost, err := s.fl.leaseLosses()
	wg.Wait()
	r.add("load end -> every agent's checkpoint loop returned", "%s", secs(time.Since(r.to)))
	if err != nil {
		return err
	}
	asked := float64(busy) / m.interval.Seconds()
	achieved := float64(st.written) / elapsed
	r.add("load for", "%s (the etcd and leader figures below are over the load only)", secs(time.Duration(elapsed*float64(time.Second))))
	r.add("model", "every %v, %d files per Txn, %.0f%% of files busy", m.interval, m.batch, 100*m.busy)
	r.add("checkpoint keys/s asked", "%.0f (%d busy files)", asked, busy)
	r.add("checkpoint keys/s achieved", "%.0f (%.0f%% of asked)", achieved, 100*achieved/max(asked, 1))
	r.add("Txns ok / fenced / failed", "%d / %d / %d", st.txns-st.fenced, st.fenced, st.errs)
	if kind, n := st.commonError(); n > 0 {
		r.add("most common Txn error", "%q (%d times)", kind, n)
	}
	r.add("Txn latency p50 / p99", "%v / %v", st.quantile(0.50).Round(time.Millisecond), st.quantile(0.99).Round(time.Millisecond))
	r.add("agent leases lost", "%.0f", lost-lost0)
	tSettle := s.settle(ctx, r, "after the checkpoints", time.Time{})
	r.add("end -> leader settled", "%s", secs(tSettle))
	r.add("assignments moved or recreated", "%d", moved(before, s.fl.snapshot()))
	r.headline = fmt.Sprintf("%.0f of %.0f keys/s (%.0f%%), Txn p99 %v, %.0f leases lost",
		achieved, asked, 100*achieved/max(asked, 1), st.quantile(0.99).Round(time.Millisecond), lost-lost0)
	return nil
}

// idle lets the settled fleet be for --duration: what the leader and etcd
// cost when nothing changes (lease renewals, periodic resyncs, status).
func idle(ctx context.Context, s *sim, r *result) error {
	s.settle(ctx, r, "before the idle period", time.Time{})
	c0 := s.fl.counts()
	leader, err := s.leaderNow(ctx)
	if err != nil {
		return err
	}
	r.from = time.Now()
	s.e.sm.take(ctx)
	t := time.NewTimer(s.o.duration)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	c := s.fl.counts()
	r.add("idle for", "%s, leader %s at the start", secs(s.o.duration), leader)
	r.add("assignment keys created / deleted", "%d / %d", c.creates-c0.creates, c.deletes-c0.deletes)
	r.headline = fmt.Sprintf("%d assignment keys created, %d deleted", c.creates-c0.creates, c.deletes-c0.deletes)
	return nil
}
