package ship

import (
	"context"
	"time"
)

// prepared is a batch taken from pending, with its first attempt's calls
// encoded: the records of each call by its first entry.
type prepared struct {
	b     []*entry
	calls map[*entry]*encodedCall
}

// release puts back the buffers of the calls not sent.
func (p *prepared) release(s *Shipper) {
	for _, ec := range p.calls {
		ec.release(s)
	}
	p.calls = nil
}

// prepare waits for the next batch to be due, takes it, and encodes the
// calls its first attempt makes: the records not rejected at Send, by
// topic, split as writeTopic splits them with the topics' current limits.
// A call whose topic's metadata fails is left for the attempt to encode.
// It returns nil when ctx ends.
func (s *Shipper) prepare(ctx context.Context, timer *time.Timer) *prepared {
	b := s.nextBatch(ctx, timer)
	if b == nil {
		return nil
	}
	p := &prepared{b: b}
	todo := s.prepTodo[:0]
	for _, e := range b {
		if e.reject == nil {
			todo = append(todo, e)
		}
	}
	defer func() { clear(todo); s.prepTodo = todo[:0] }()
	topics, groups := groupByTopic(todo)
	for _, t := range topics {
		es, limit := groups[t], s.topicLimit(t)
		nparts, err := s.partitions(ctx, t)
		if err != nil {
			continue
		}
		for len(es) > 0 {
			n, _ := s.nextCall(es, limit)
			ec := s.encodeCall(t, es[:n], nparts)
			if ec.err == nil {
				if p.calls == nil {
					p.calls = map[*entry]*encodedCall{}
				}
				p.calls[es[0]] = ec
			}
			es = es[n:]
		}
	}
	return p
}

// topicLimit is topic's batch byte limit: BatchBytes, or less once the
// topic refused a batch as too large.
func (s *Shipper) topicLimit(topic string) int64 {
	s.limitsMu.Lock()
	defer s.limitsMu.Unlock()
	if x, ok := s.limits[topic]; ok {
		return min(s.cfg.BatchBytes, x)
	}
	return s.cfg.BatchBytes
}
