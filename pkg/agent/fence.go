package agent

import (
	"context"
	"time"

	"github.com/logferry/logferry/pkg/mirror"
)

// Self-fencing: the controller stops every file when the lease cannot be
// proved alive, and reads the assignments again before it resumes.

// checkLease fences or unfences the agent as the lease's proof says, and
// arms the timer for the moment the proof runs out. It reports whether it
// did either (a proof that changes nothing is most of them).
func (c *controller) checkLease(ctx context.Context, timer *time.Timer) (changed bool) {
	a := c.a
	alive := a.reg.Alive()
	switch {
	case alive && c.fenced:
		c.unfence(ctx)
		changed = true
	case !alive && !c.fenced:
		c.fence()
		changed = true
	}
	if alive {
		timer.Reset(time.Until(a.reg.AliveUntil()))
	}
	return changed
}

// unfence starts a new watch of the assignments; runs start once its
// snapshot arrives.
func (c *controller) unfence(ctx context.Context) {
	a := c.a
	c.fenced = false
	if c.everAlive {
		a.log.Info("etcd lease proved alive again; reading the assignments again before shipping")
	}
	c.everAlive = true
	// The controller decodes each assignment into its own form
	// (onAssignBatch): the mirror keeps no values (2.5 MB at 10,000 files).
	m, err := mirror.New(a.cfg.Client, []string{a.cfg.Space.AgentAssignPrefix(a.cfg.ID)}, mirror.WithLogger(a.log), mirror.WithoutValues())
	if err != nil {
		a.log.Error("cannot watch the assignments", "err", err)
		return
	}
	c.gen++
	gen := c.gen
	wctx, cancel := context.WithCancel(ctx)
	batches := c.batches
	c.watch = &assignWatch{gen: gen, cancel: cancel, ended: goEnded(func() error {
		return m.Run(wctx, func(b mirror.Batch) error {
			select {
			case batches <- genBatch{gen: gen, b: b}:
				return nil
			case <-wctx.Done():
				return wctx.Err()
			}
		})
	})}
}

// fence stops every file at once: the lease can no longer be proved alive,
// so the coordinator may give the files away at any moment, and Kafka
// writes cannot be fenced by etcd. Records not on the wire are dropped
// (they are read again), and nothing starts until a lease is proved again
// and the assignments are read again.
func (c *controller) fence() {
	a := c.a
	c.fenced = true
	a.m.selfFences.Inc()
	a.log.Warn("cannot prove the etcd lease alive; stopping every file until a lease is held and the assignments are read again",
		"alive_until", a.reg.AliveUntil().Format(time.RFC3339Nano), "err", a.reg.Err())
	if c.watch != nil {
		c.watch.cancel()
		c.oldWatch = append(c.oldWatch, c.watch.ended)
		c.watch = nil
	}
	c.haltAll()
	// Every tailer has returned (keeping its descriptor): nothing sends any
	// more, so everything the shipper holds now is dropped, and each run
	// reads on from what Kafka acknowledged, if its assignment is still
	// the same once read again.
	a.cfg.Shipper.Fence()
	for _, fr := range c.runs {
		if fr.state != stateReleasing {
			c.readAgain(fr)
		}
	}
	c.assigns = map[fileRef]assignment{}
	c.assignsLoaded = false
	c.publish()
}

// onLapsed restarts, from what Kafka acknowledged, the runs the shipper
// dropped a record of (the lease was not proved for a moment): the records
// after it can never be acknowledged in order.
func (c *controller) onLapsed() {
	for _, fr := range c.runs {
		if fr.state == stateReleasing || !fr.hasLapsed() {
			continue
		}
		c.a.log.Warn("records of the file were dropped unwritten (lease not proved); reading on from what Kafka acknowledged",
			"topic", fr.topic, "path", fr.pathNow())
		c.halt(fr)
		c.readAgain(fr)
	}
}

// readAgain forgets what fr's tailer had sent and Kafka did not
// acknowledge (dropped unwritten), so the next tailer of fr reads it again
// from the acknowledged offset: also a finished file's, through the
// descriptor its tailer kept. Only while no tailer of fr runs.
func (c *controller) readAgain(fr *fileRun) {
	dropped := fr.resetInflight()
	switch {
	case fr.state == stateTailing, (fr.state == stateFinished || fr.state == stateParked) && dropped:
		fr.to(stateIdle)
	case fr.state == stateGone && dropped:
		c.a.log.Error("records of a file that is gone were dropped unwritten; they cannot be read again",
			"topic", fr.topic, "path", fr.pathNow())
	}
}
