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
	s *Shipper
	// entries are the records added; they become the shipper's at Send,
	// without a copy. spare are entries for the next Adds, taken from the
	// shipper's free ones at Send.
	entries []*entry
	spare   []*entry
	// buf is where Add encodes the bodies, one after the other; Send
	// copies them into the shipper's arena (under the lock it takes
	// anyway, one copy per run of bodies that fits a chunk), so that a
	// batch holds no arena memory between Sends: a sink per file, most of
	// them idle, must not pin a chunk each.
	buf []byte
}

// A Batch keeps its scratch after a Send only while it is busy (at least
// batchBusy records a Send) and the scratch at most batchBufMax: an idle
// file's sink, or one that met a huge line, lets go of it.
const (
	batchBusy     = 16
	batchBufMax   = 64 << 10
	batchSpareMax = 512 // entries a batch takes for its next Adds
)

// NewBatch returns an empty batch for s.
func (s *Shipper) NewBatch() *Batch { return &Batch{s: s} }

// Len is the number of records added and not yet sent.
func (b *Batch) Len() int { return len(b.entries) }

// Add encodes *r into the batch (the caller may reuse r and its slices at
// once). A record the shipper can never write is accepted and acked with
// an error, as by Shipper.Send.
func (b *Batch) Add(r *Record) {
	var e *entry
	if k := len(b.spare); k > 0 {
		e = b.spare[k-1]
		b.spare = b.spare[:k-1]
	} else {
		e = new(entry) // none spare yet: they come back as batches complete
	}
	b.s.initEntry(e, r)
	if e.reject == nil {
		// A slice of buf, valid after buf grows (the old array stays).
		at := len(b.buf)
		b.buf = appendBody(b.buf, r)
		e.body = b.buf[at:len(b.buf):len(b.buf)]
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
	buf := b.buf // the bodies of entries n on
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
		s.carveLocked(b.entries[n:end], buf)
		poke := false
		for _, e := range b.entries[n:end] {
			buf = buf[len(e.body):]
			poke = s.enqueueLocked(e) || poke
		}
		if end == len(b.entries) && end >= batchBusy {
			// Entries for the next Adds, as many as this time.
			b.spare = s.takeFreeLocked(b.spare, min(end, batchSpareMax))
		}
		s.mu.Unlock()
		if poke {
			s.poke()
		}
		n = end
	}
	return n, nil
}

// drop empties the batch (the entries from sent on were not accepted),
// keeping its scratch only if it is busy.
func (b *Batch) drop(sent int) {
	busy := len(b.entries) >= batchBusy
	if !busy || cap(b.buf) > batchBufMax {
		b.buf = nil
	}
	b.buf = b.buf[:0]
	// Those not accepted are the batch's again (nothing of theirs is in
	// the arena; Add sets them anew); the others are the shipper's.
	b.spare = append(b.spare, b.entries[sent:]...)
	clear(b.entries)
	if !busy {
		b.entries, b.spare = nil, nil
	}
	b.entries = b.entries[:0]
}

// Close drops the records not sent and lets go of the batch's memory.
func (b *Batch) Close() {
	b.entries, b.spare, b.buf = nil, nil, nil
}
