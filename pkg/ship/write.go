package ship

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ship writes batch p.b until every record of it is acked or rejected, or
// until ctx ends. Nothing else is written meanwhile: that is what keeps
// retried records ahead of later ones. The first attempt sends the calls
// prepare encoded.
func (s *Shipper) ship(ctx context.Context, p *prepared) {
	b := p.b
	defer p.release(s)
	todo := s.shipTodo[:0]
	defer func() { clear(todo[:cap(todo)]); s.shipTodo = todo[:0] }()
	local := map[string]*failure{}
	for _, e := range b {
		if e.reject != nil {
			e.final, e.err = true, e.reject
			var re *RejectedError
			errors.As(e.reject, &re)
			f := local[re.Topic+"\x00"+re.Reason]
			if f == nil {
				f = &failure{topic: re.Topic, reason: re.Reason, err: e.reject}
				local[re.Topic+"\x00"+re.Reason] = f
			}
			f.rejected++
			continue
		}
		todo = append(todo, e)
	}
	for _, f := range local {
		s.m.rejected.WithLabelValues(f.reason).Add(float64(f.rejected))
		s.log.Error("record can never be written; acking it as failed", "topic", f.topic, "reason", f.reason, "records", f.rejected, "err", f.err)
	}

	// Limits for this batch only: halving to isolate a bad record (for
	// example INVALID_RECORD) must not slow the topic down for good.
	limits := map[string]int64{}
	fails := 0 // consecutive attempts that changed nothing
	for len(todo) > 0 {
		if fails > 0 {
			t := time.NewTimer(s.backoff(fails))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		progress := s.attempt(ctx, todo, limits, fails, p.calls)
		p.release(s) // a retry encodes its own calls
		if ctx.Err() != nil {
			return
		}
		s.release(b)
		todo = s.unfinished(todo)
		switch {
		case progress && fails > 0:
			s.log.Info("kafka writes succeed again", "failed_attempts", fails, "records_left", len(todo))
			fails = 0
		case !progress:
			fails++
		}
	}
	s.release(b)
	s.complete(b)
}

func (s *Shipper) unfinished(todo []*entry) []*entry {
	out := todo[:0]
	for _, e := range todo {
		if !e.final {
			out = append(out, e)
		}
	}
	clear(todo[len(out):])
	return out
}

// backoff is the wait before attempt fails+1: doubling from RetryBackoffMin
// to RetryBackoffMax, with jitter in its upper half so that many agents
// cut off by one outage do not come back in step.
func (s *Shipper) backoff(fails int) time.Duration {
	d := s.cfg.RetryBackoffMax
	if fails <= 30 {
		if x := s.cfg.RetryBackoffMin << (fails - 1); x > 0 && x < d {
			d = x
		}
	}
	return d/2 + rand.N(d/2+1)
}

// failure aggregates the records of one topic that failed for one reason in
// one attempt, so that an outage logs a line per attempt, not per record.
type failure struct {
	topic, reason   string
	err             error // the first
	retry, rejected int
}

// topicResult is what writing one topic's records in one attempt did.
type topicResult struct {
	ok, okBytes int
	fails       map[string]*failure // by reason
	// limit, when positive, is a smaller batch byte limit to retry with;
	// persist says the topic, not one record, needs it (max.message.bytes).
	limit   int64
	persist bool
	fenced  int // dropped unwritten: the gate was closed
}

func (r *topicResult) fail(topic, reason string, err error, rejected bool) {
	if r.fails == nil {
		r.fails = map[string]*failure{}
	}
	f := r.fails[reason]
	if f == nil {
		f = &failure{topic: topic, reason: reason, err: err}
		r.fails[reason] = f
	}
	if rejected {
		f.rejected++
	} else {
		f.retry++
	}
}

// attempt writes every record of todo once: each topic's records by
// writeTopic, topics in parallel (they share no partition, so no order).
// It reports whether anything changed (a record acked or rejected, or a
// batch to split), which decides whether the next attempt backs off.
func (s *Shipper) attempt(ctx context.Context, todo []*entry, limits map[string]int64, fails int, pre map[*entry]*encodedCall) bool {
	topics, groups := groupByTopic(todo)
	limitOf := func(t string) int64 {
		l := s.topicLimit(t)
		if x, ok := limits[t]; ok {
			l = min(l, x)
		}
		return l
	}
	results := make([]topicResult, len(topics))
	if len(topics) == 1 {
		results[0] = s.writeTopic(ctx, topics[0], groups[topics[0]], limitOf(topics[0]), pre)
	} else {
		var wg sync.WaitGroup
		for i, t := range topics {
			limit := limitOf(t)
			wg.Go(func() { results[i] = s.writeTopic(ctx, t, groups[t], limit, pre) })
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return false
	}

	progress := false
	for i, r := range results {
		t := topics[i]
		if r.fenced > 0 {
			progress = true
			s.m.fenced.Add(float64(r.fenced))
			s.log.Warn("lease not proved alive; dropping records unwritten (they are read again)", "topic", t, "records", r.fenced)
		}
		if r.ok > 0 {
			progress = true
			c := s.counters(t)
			c.records.Add(float64(r.ok))
			c.bytes.Add(float64(r.okBytes))
		}
		if r.limit > 0 {
			progress = true
			limits[t] = r.limit
			if r.persist {
				if s.topicLimit(t) == s.cfg.BatchBytes {
					s.log.Warn("kafka topic refused a batch as too large; its max.message.bytes is below --kafka-batch-bytes, "+
						"so its batches are cut smaller from now on (lower --kafka-batch-bytes to avoid the retries)",
						"topic", t, "batch_bytes", r.limit)
				}
				s.limitsMu.Lock()
				s.limits[t] = r.limit
				s.limitsMu.Unlock()
			}
		}
		for _, f := range r.fails {
			s.m.writeErrors.WithLabelValues(f.reason).Add(float64(f.retry + f.rejected))
			if f.rejected > 0 {
				progress = true
				s.m.rejected.WithLabelValues(f.reason).Add(float64(f.rejected))
				s.log.Error("kafka refused records for good; acking them as failed", "topic", t, "reason", f.reason,
					"records", f.rejected, "err", f.err)
			}
			if f.retry > 0 {
				s.m.retries.WithLabelValues(f.reason).Add(float64(f.retry))
				level := slog.LevelWarn
				if isClientWide(f.err) {
					// No retry fixes this without an operator; say so loudly.
					level = slog.LevelError
				}
				s.log.Log(ctx, level, "kafka write failed; retrying", "topic", t, "reason", f.reason,
					"records", f.retry, "failed_attempts", fails+1, "err", f.err)
			}
		}
	}
	return progress
}

func (s *Shipper) counters(topic string) topicCounters {
	c, ok := s.topicMetrics[topic]
	if !ok {
		c = topicCounters{s.m.records.WithLabelValues(topic), s.m.bytes.WithLabelValues(topic)}
		s.topicMetrics[topic] = c
	}
	return c
}

// writeTopic writes es, records of one topic in Send order, in calls of at
// most limit bytes and BatchSize records, one after the other. It stops
// after a call that left a record to retry: the records after it may share
// its partition and must not overtake it. It sets final and err on the
// records that are done, and nothing else it shares.
func (s *Shipper) writeTopic(ctx context.Context, topic string, es []*entry, limit int64, pre map[*entry]*encodedCall) topicResult {
	var r topicResult
	for len(es) > 0 {
		if s.gate != nil && !s.gate() {
			// Not one more byte on the wire: drop what is left. Records
			// already written stay acked (or retried: a retry comes back here).
			for _, e := range es {
				e.final, e.err = true, ErrFenced
			}
			r.fenced += len(es)
			return r
		}
		// Records of an earlier epoch (Fence) are dropped. Epochs only grow
		// in Send order, so within a topic they are a prefix.
		for cur := s.epoch.Load(); len(es) > 0 && es[0].epoch != cur; es = es[1:] {
			es[0].final, es[0].err = true, ErrFenced
			r.fenced++
		}
		if len(es) == 0 {
			return r
		}
		n, bytes := s.nextCall(es, limit)
		call := es[:n]
		es = es[n:]
		start := time.Now()
		werrs, err := s.produce(ctx, topic, call, pre[call[0]])
		s.m.latency.Observe(time.Since(start).Seconds())
		s.m.batch.Observe(float64(n))
		if ctx.Err() != nil {
			// A request already sent may still be written; unacked, those
			// records are read again after a restart: duplicates, not loss.
			return r
		}
		stop := false
		for i, e := range call {
			rerr := err
			if werrs != nil {
				rerr = werrs[i]
			}
			if rerr == nil {
				e.final = true
				r.ok++
				r.okBytes += int(e.payload)
				continue
			}
			cls, reason := classify(rerr)
			switch {
			case cls == fatal || (cls == isolate && n == 1):
				e.final, e.err = true, &RejectedError{Topic: topic, Reason: reason, Err: rerr}
				r.fail(topic, reason, rerr, true)
			case cls == isolate:
				// Halve the calls until the record is alone; then the
				// error is its own. Only a size error says the topic, not
				// a record, needs smaller batches from now on.
				r.fail(topic, reason, rerr, false)
				r.limit = max(bytes/2, 1)
				var ke kafka.Error
				r.persist = errors.As(rerr, &ke) && (ke == kafka.MessageSizeTooLarge || ke == kafka.RecordListTooLarge)
				stop = true
			default:
				r.fail(topic, reason, rerr, false)
				stop = true
			}
		}
		if stop {
			return r
		}
	}
	return r
}

// nextCall is how many records of es, records of one topic, the next call
// writes, and their bytes: at most BatchSize records and limit bytes, and at
// least one.
func (s *Shipper) nextCall(es []*entry, limit int64) (n int, bytes int64) {
	for n < len(es) && n < s.cfg.BatchSize {
		if n > 0 && bytes+es[n].size > limit {
			break
		}
		bytes += es[n].size
		n++
	}
	return n, bytes
}

// groupByTopic splits es by topic, keeping Send order within each, and
// lists the topics in order of first appearance.
func groupByTopic(es []*entry) (topics []string, groups map[string][]*entry) {
	if len(es) > 0 && es[0].topic == es[len(es)-1].topic {
		// The common case, one topic, without a map insert per record.
		one := true
		for _, e := range es {
			if e.topic != es[0].topic {
				one = false
				break
			}
		}
		if one {
			return []string{es[0].topic}, map[string][]*entry{es[0].topic: es}
		}
	}
	groups = map[string][]*entry{}
	for _, e := range es {
		g, ok := groups[e.topic]
		if !ok {
			topics = append(topics, e.topic)
		}
		groups[e.topic] = append(g, e)
	}
	return topics, groups
}

// streamKey is a topic and key: the unit of ordering.
type streamKey struct{ topic, key string }

// release calls the Ack of every finished record of b whose earlier
// records of the same key are acked, so that acks of a key come in Send
// order even when a rejected record is finished before a retried earlier one.
func (s *Shipper) release(b []*entry) {
	var blocked map[streamKey]struct{}
	// The room of the acked records goes back at once at the end: one
	// semaphore release (and one wake-up of a blocked Send) per batch, not
	// per record. Likewise consecutive successes of one RangeAcker are
	// told at once, and the references to an arena chunk dropped at once.
	var weight, recs int64
	var run struct {
		to          RangeAcker
		first, last uint64
	}
	var refs struct {
		c *chunk
		n int32
	}
	flushRun := func() {
		if run.to != nil {
			run.to.AckRange(run.first, run.last)
			run.to = nil
		}
	}
	defer func() {
		flushRun()
		if refs.c != nil {
			s.unref(refs.c, refs.n)
		}
		if recs > 0 {
			s.releaseWeight(weight, recs)
		}
	}()
	for _, e := range b {
		if e == nil || e.acked {
			continue
		}
		if !e.final {
			if k := e.key(); k != nil {
				if blocked == nil {
					blocked = map[streamKey]struct{}{}
				}
				blocked[streamKey{e.topic, string(k)}] = struct{}{}
			}
			continue
		}
		if blocked != nil {
			if k := e.key(); k != nil {
				if _, ok := blocked[streamKey{e.topic, string(k)}]; ok {
					continue
				}
			}
		}
		e.acked = true
		switch ra, ok := e.ack.(RangeAcker); {
		case ok && e.err == nil && run.to == ra && e.token == run.last+1:
			run.last = e.token
		case ok && e.err == nil:
			flushRun()
			run.to, run.first, run.last = ra, e.token, e.token
		case e.ack != nil:
			flushRun() // acks keep Send order
			e.ack.Ack(e.token, e.err)
		}
		if e.chunk != refs.c {
			if refs.c != nil {
				s.unref(refs.c, refs.n)
			}
			refs.c, refs.n = e.chunk, 0
		}
		refs.n++
		e.body, e.chunk, e.ack = nil, nil, nil // let the payload go before the batch ends
		weight += e.weight
		recs++
	}
}
