package main

import (
	"context"
	"fmt"
	"time"

	"github.com/logferry/logferry/pkg/topics"
)

// The coordinator ids; coord-1 starts first, so it usually leads first.
var coordIDs = []string{"coord-1", "coord-2"}

// coldLocal starts both coordinators against a fleet that already
// heartbeats the local topic: the time until a leader is elected and until
// every local file is assigned.
func coldLocal(ctx context.Context, s *sim, r *result) error {
	start := time.Now()
	for _, id := range coordIDs {
		if err := s.e.co.start(id); err != nil {
			return err
		}
	}
	want := s.o.agents * s.o.files
	var leader string
	tLead, ok := s.await(ctx, func() bool {
		leader, _ = s.leaderNow(ctx)
		return leader != ""
	})
	if !ok {
		r.fail("no coordinator leads after %v", tLead)
		return nil
	}
	tAll, ok := s.await(ctx, func() bool { return s.fl.counts().localKeys == want })
	r.add("agents x local files", "%d x %d = %d", s.o.agents, s.o.files, want)
	r.add("coordinators started -> leader elected", "%s (%s)", secs(tLead), leader)
	if !ok {
		r.fail("%d of %d local files assigned after %v", s.fl.counts().localKeys, want, tAll)
		return nil
	}
	r.add("coordinators started -> every local file assigned", "%s", secs(time.Since(start)))
	r.headline = fmt.Sprintf("%d local files assigned %s after the coordinators started", want, secs(time.Since(start)))
	s.settle(ctx, r, "after the cold start", start)
	return nil
}

// coldShared writes the shared topic while the fleet and the coordinators
// run; every agent then reports its shared files: the time until every
// shared file is assigned (the leader builds the topic's ring cold).
func coldShared(ctx context.Context, s *sim, r *result) error {
	start := time.Now()
	if err := s.putTopic(ctx, sharedTopic, topics.Config{Paths: []string{"/mnt/shared/fleetsim/*.log"}, Shared: true}); err != nil {
		return err
	}
	s.fl.shareAll()
	wrote := time.Since(start)
	localBefore := s.fl.counts().localKeys
	took, ok := s.await(ctx, func() bool { return s.fl.counts().sharedAssigned == s.fl.sharedTotal })
	r.add("shared files (agents seeing each)", "%d (%d)", s.fl.sharedTotal, s.o.sharedReplicas)
	r.add("members of the shared topic", "%d", len(s.fl.all()))
	r.add("topic written -> every heartbeat queued", "%s", secs(wrote))
	if !ok {
		r.fail("%d of %d shared files assigned after %v", s.fl.counts().sharedAssigned, s.fl.sharedTotal, took)
		return nil
	}
	r.add("topic written -> every shared file assigned", "%s", secs(took))
	r.headline = fmt.Sprintf("%d shared files over %d members assigned in %s", s.fl.sharedTotal, len(s.fl.all()), secs(took))
	s.settle(ctx, r, "after the shared topic", start)
	r.add("topic written -> settled (no handover pending)", "%s", secs(time.Since(start)))
	if c := s.fl.counts(); c.localKeys != localBefore {
		r.add("local assignments changed meanwhile", "%d -> %d", localBefore, c.localKeys)
	}
	return nil
}
