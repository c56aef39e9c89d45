package ship

import "context"

// Batch gathers records for the shipper. Add encodes a record into memory
// the batch owns, without a lock; Send hands every record added since the
// last Send to the shipper at once: one wait for room and one lock for
// them all, where Send on the Shipper costs both per record. A tailer
// reading a file adds the lines it has and sends them before it waits for
// more. A Batch is used by one goroutine at a time; records added and
// not sent are no one's, and Close drops them.
type Batch struct {
	s       *Shipper
	entries []entry
	chunk   *chunk // where Add encodes (the batch holds a reference)
}

// NewBatch returns an empty batch for s.
func (s *Shipper) NewBatch() *Batch { return &Batch{s: s} }

// Len is the number of records added and not yet sent.
func (b *Batch) Len() int { return len(b.entries) }

// Add encodes r into the batch (the caller may reuse r's slices at once). A
// record the shipper can never write is accepted and acked with an error,
// as by Shipper.Send.
func (b *Batch) Add(r Record) {
	e := b.s.newEntry(&r)
	if e.reject == nil {
		e.body, e.chunk = b.s.carve(&b.chunk, &r)
	}
	b.entries = append(b.entries, e)
}

// Send hands the records added since the last Send to the shipper, in
// order, waiting for room under the in-flight bound as Shipper.Send does,
// and empties the batch. It returns how many records the shipper
// accepted: all of them with a nil error; with ctx's error or ErrStopped,
// the first n, and the Acks of the others will never be called.
func (b *Batch) Send(ctx context.Context) (n int, err error) {
	s := b.s
	defer func() { b.drop(n) }()
	for n < len(b.entries) {
		if s.stop.Err() != nil {
			return n, ErrStopped
		}
		// The longest run that fits the bound: a record weighs at most
		// the bound, so there is at least one.
		end, weight := n, int64(0)
		for end < len(b.entries) && (end == n || weight+b.entries[end].weight <= s.cfg.MaxInflightBytes) {
			weight += b.entries[end].weight
			end++
		}
		if err := s.reserve(ctx, weight, int64(end-n)); err != nil {
			return n, err
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			s.releaseWeight(weight, int64(end-n))
			return n, ErrStopped
		}
		poke := false
		for i := n; i < end; i++ {
			poke = s.enqueueLocked(&b.entries[i]) || poke
		}
		s.mu.Unlock()
		if poke {
			s.poke()
		}
		n = end
	}
	return n, nil
}

// drop empties the batch; the entries from sent on were not accepted, and
// give back their references to the arena.
func (b *Batch) drop(sent int) {
	for i := sent; i < len(b.entries); i++ {
		if c := b.entries[i].chunk; c != nil {
			b.s.unref(c, 1)
		}
	}
	clear(b.entries) // the shipper has its own copies
	b.entries = b.entries[:0]
}

// Close drops the records not sent and lets go of the batch's memory.
func (b *Batch) Close() {
	b.drop(0)
	if b.chunk != nil {
		b.s.unref(b.chunk, 1)
		b.chunk = nil
	}
}
