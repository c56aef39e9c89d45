package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/mirror"
)

// standbyControl pauses the standby's follower while this coordinator
// leads: the term mirrors everything itself.
type standbyControl struct {
	mu     sync.Mutex
	paused bool
	resume chan struct{}      // closed when paused ends
	cancel context.CancelFunc // of the follower running, if any
	done   chan struct{}      // closed when that follower returned
}

// pauseStandby stops the follower and waits until it has.
func (c *Coordinator) pauseStandby() {
	s := &c.standby
	s.mu.Lock()
	s.paused = true
	s.resume = make(chan struct{})
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (c *Coordinator) resumeStandby() {
	s := &c.standby
	s.mu.Lock()
	s.paused = false
	close(s.resume)
	s.mu.Unlock()
}

// standbyLoop runs follow whenever no term runs, until ctx is done.
func (c *Coordinator) standbyLoop(ctx context.Context) error {
	s := &c.standby
	for {
		s.mu.Lock()
		if s.paused {
			resume := s.resume
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return nil
			case <-resume:
			}
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		s.cancel, s.done = cancel, done
		s.mu.Unlock()
		err := c.follow(fctx)
		cancel()
		close(done)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// follow is the standby's read-only view: a mirror of /topics/ (configs and
// heartbeats) applied to a State of its own, from which the planner's
// rings are kept in step with each shared topic's members, so that the
// first pass of a term here is incremental. It writes nothing. It returns
// nil when ctx is done.
func (c *Coordinator) follow(ctx context.Context) error {
	log := c.log.With("part", "standby")
	m, err := mirror.New(c.cfg.Client, []string{c.cfg.Space.TopicsPrefix()},
		mirror.WithLogger(log), mirror.WithoutState(),
		mirror.WithBackoff(50*time.Millisecond, 2*time.Second))
	if err != nil {
		return err
	}
	var mu sync.Mutex
	var queue []mirror.Batch
	dirty := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- m.Run(ctx, func(b mirror.Batch) error {
			mu.Lock()
			queue = append(queue, b)
			mu.Unlock()
			select {
			case dirty <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	st := plan.NewState(c.cfg.Space)
	listing := false
	for {
		select {
		case <-ctx.Done():
			return <-done
		case err := <-done:
			return err
		case <-dirty:
		}
		mu.Lock()
		q := queue
		queue = nil
		mu.Unlock()
		for _, b := range q {
			if b.Snapshot {
				st.Reset()
				listing = true
			}
			for _, ev := range b.Events {
				st.Apply(ev)
			}
			listing = listing && b.Partial
		}
		if listing {
			continue // an incomplete list says nothing about members
		}
		work, err := c.planner.Rings(st)
		if err != nil {
			log.Warn("ring work not computed", "err", err)
		}
		c.rings.request(work)
		// Coalesce bursts as the leader's reconciler does.
		t := time.NewTimer(c.cfg.ReconcileInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return <-done
		case <-t.C:
		}
	}
}
