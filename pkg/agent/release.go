package agent

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// release hands a revoked file back: stop reading, wait for Kafka's acks,
// then write the final offset and delete the assignment in one Txn guarded
// by the assignment's create revision. The run stays until the result is
// in: a release that failed on an etcd error is tried again with the same
// run, so its final offset is not lost.
func (c *controller) release(fr *fileRun) {
	a := c.a
	c.halt(fr)
	fr.to(stateReleasing)
	c.releasing.Add(1)
	go func() {
		defer c.releasing.Done()
		ctx, cancel := context.WithTimeout(c.releaseCtx, a.cfg.StopTimeout+5*time.Second)
		defer cancel()
		if err := fr.waitDrained(ctx); err != nil {
			a.log.Warn("release: Kafka did not acknowledge everything in time; releasing at the acknowledged offset",
				"topic", fr.topic, "path", fr.pathNow(), "err", err)
		}
		ops := []clientv3.Op{clientv3.OpDelete(fr.assignKey)}
		if off, size, due := fr.checkpointDue(); due && !fr.identityUnknown() {
			ops = append(ops, clientv3.OpPut(a.cfg.Space.Offset(fr.topic, fr.key), string(a.checkpointValue(fr, off, size))))
		}
		tctx, tcancel := context.WithTimeout(ctx, txnTimeout)
		resp, err := a.cfg.Client.Txn(tctx).
			If(clientv3.Compare(clientv3.CreateRevision(fr.assignKey), "=", fr.createRev)).
			Then(ops...).Commit()
		tcancel()
		result := "released"
		switch {
		case err != nil:
			result = "error"
			a.log.Error("release failed; retrying", "topic", fr.topic, "file", fr.key, "err", err)
		case !resp.Succeeded:
			result = "fenced"
		default:
			a.log.Info("file released", "topic", fr.topic, "path", fr.pathNow(), "offset", fr.ackedOffset())
		}
		a.m.releases.WithLabelValues(result).Inc()
		select {
		case c.releases <- releaseDone{fr: fr, result: result}:
		case <-c.stopped:
		}
	}()
}

// releaseRetry is how long a release that failed on an etcd error waits
// before it is tried again.
const releaseRetry = time.Second

func (c *controller) onRelease(rd releaseDone) {
	fr := rd.fr
	if fr.state != stateReleasing {
		return
	}
	if rd.result == "error" {
		// The assignment is still revoking: the next reconcile after the
		// wait releases the same run again, with its acknowledged offset.
		fr.to(stateIdle)
		fr.retryAt = time.Now().Add(releaseRetry)
		time.AfterFunc(releaseRetry, func() { poke(c.dirty) })
		return
	}
	c.drop(fr)
}
