package ship

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pierrec/lz4/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/semaphore"
)

// Record is one Kafka record. Send copies what it needs of the Key, Value
// and Headers into its own buffers: the caller may reuse them as soon as
// Send returns.
type Record struct {
	Topic string
	// Key picks the partition (murmur2, as Java clients do); records with
	// the same key stay in order. An empty key spreads records at random.
	Key   []byte
	Value []byte
	// Shared, unless nil, are headers encoded once for the many records
	// that carry them (a file's host and path); they come first, then
	// Headers.
	Shared  *Headers
	Headers []kafka.Header
	// Ack, unless nil, is told the record's outcome exactly once, with
	// Token, from Run's goroutine: a nil error once Kafka acknowledged the
	// record, or a *RejectedError (matching ErrRejected) if it cannot be
	// written. Acks of one key come in Send order. It must not block, and
	// so must not call Send (which may wait for room only Run can free):
	// the next records wait for it. An interface and a token rather than a
	// closure, so that a record costs its sender no allocation.
	Ack   Acker
	Token uint64
}

// Headers are headers encoded as a record batch holds them, once: a
// record's Shared headers cost a copy of their bytes, not the encoding of
// each (a fifth of the agent's encoding time per line, with four headers
// that never change for a file). Create them with NewHeaders; they are
// immutable and may be shared by any number of records and goroutines.
type Headers struct {
	n       int
	enc     []byte
	size    int64 // their part of recordSize
	payload int64 // their keys' and values' bytes
}

// NewHeaders encodes hs (copied: the caller may reuse them).
func NewHeaders(hs ...kafka.Header) *Headers {
	h := &Headers{n: len(hs)}
	for _, x := range hs {
		h.enc = appendHeader(h.enc, x)
		h.size += headerSize(x)
		h.payload += int64(len(x.Key) + len(x.Value))
	}
	return h
}

// Acker receives the outcome of the records that name it.
type Acker interface {
	Ack(token uint64, err error)
}

// RangeAcker is an Acker that can also be told of the success of several
// records at once: the records with tokens first to last, which the
// shipper reports this way only for records it would otherwise have acked
// one after the other, each with the token after the previous one. It
// saves the caller's bookkeeping per record. Its dynamic type must be
// comparable (a pointer, say): the shipper compares them.
type RangeAcker interface {
	Acker
	AckRange(first, last uint64)
}

// AckFunc adapts a function to Acker, ignoring the token.
type AckFunc func(err error)

// Ack calls f(err).
func (f AckFunc) Ack(_ uint64, err error) { f(err) }

// entry is a record accepted by Send, with what the shipper needs to track
// it. The record itself is already encoded (body): an entry holds few
// pointers, so the collector's work does not grow with the records in
// flight.
type entry struct {
	topic string
	// body is the record as a v2 batch encodes it after its offset delta
	// (key, value, headers), carved from chunk (nil: an array of its own);
	// nil if rejected at Send.
	body    []byte
	chunk   *chunk
	ack     Acker
	token   uint64
	seq     uint64 // Send order, from 0
	size    int64  // as kafka-go counts it against BatchBytes; 0 if rejected at Send
	payload int64  // key + value + headers, for the bytes metric
	weight  int64  // what it holds of the in-flight bound
	reject  error  // set at Send when it can never be written
	epoch   uint64 // the shipper's epoch when Send accepted it (see Fence)

	// Set while its batch is written, by the one goroutine writing its topic.
	final bool  // acknowledged by Kafka (err nil) or rejected (err set)
	err   error // for the Ack
	acked bool  // Ack called
}

// key is the record's key (nil for none), read back from its body.
func (e *entry) key() []byte {
	n, w := binary.Varint(e.body)
	if w <= 0 || n < 0 {
		return nil
	}
	return e.body[w : w+int(n)]
}

// recordOverhead is the memory one in-flight record costs beyond its bytes.
const recordOverhead = 1024

// Shipper batches records and writes them to Kafka. Create it with New, run
// Run once, and Send from any number of goroutines.
type Shipper struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	tr  *kafka.Transport
	w   *kafka.Writer
	sem *semaphore.Weighted

	inflight     atomic.Int64 // weights of accepted, unacked records
	inflightRecs atomic.Int64
	// blocked is set by a Send that waits for room: lingering for more
	// records is pointless then, the batch is due.
	blocked atomic.Bool
	// inflightReqs counts produce requests on the wire; shutdown waits for
	// them (each ends within WriteTimeout).
	inflightReqs sync.WaitGroup

	started atomic.Bool
	// gate, when set, is asked right before every produce request: false
	// drops the records instead (ErrFenced). Set before Run.
	gate func() bool
	// epoch moves with each Fence; records accepted in an earlier epoch are
	// dropped instead of written.
	epoch atomic.Uint64
	// stop is cancelled when Run returns; blocked Sends and Flushes give up.
	stop       context.Context
	cancelStop context.CancelFunc

	// Scratch of the one goroutine preparing batches (prepare) and of the
	// one writing them (ship).
	prepTodo, shipTodo []*entry

	// Spare memory, reused rather than left to the collector.
	chunks *freeList[*chunk]
	bufs   *freeList[*batchBuf]
	lz4s   *freeList[*lz4.CompressorCCompat]

	mu        sync.Mutex
	pending   []*entry // accepted, not yet taken into a batch; Send order
	pendBytes int64    // sum of their sizes
	// pendSince is when pending[0] started to wait: when it was sent into
	// an empty queue, or when the batch before it was taken (it waited
	// while that batch was written).
	pendSince time.Time
	arena     *chunk   // the chunk records are encoded into (carveLocked)
	free      []*entry // entries of completed batches, for the next Sends
	// spareBatches are the arrays of completed batches, for the next ones
	// (takeLocked).
	spareBatches [][]*entry
	nextSeq      uint64 // seq of the next accepted record
	doneSeq      uint64 // every record below it is acked
	flushSeq     uint64 // a Flush waits for every record below it: skip the linger
	stopped      bool
	progress     chan struct{} // closed and replaced whenever doneSeq moves
	wake         chan struct{} // capacity 1: pending or flushSeq changed

	// limits holds a topic's batch byte limit, once below BatchBytes.
	limitsMu sync.Mutex
	limits   map[string]int64

	// Run's goroutine only.
	topicMetrics map[string]topicCounters
}

type topicCounters struct{ records, bytes prometheus.Counter }

// New checks cfg and builds the shipper and its kafka.Writer. It starts
// nothing: no goroutine, no connection. reg receives the metrics (nil: none);
// log defaults to discarding.
func New(cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Shipper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Shipper{
		cfg:          cfg,
		log:          log.With("component", "ship"),
		sem:          semaphore.NewWeighted(cfg.MaxInflightBytes),
		progress:     make(chan struct{}),
		wake:         make(chan struct{}, 1),
		limits:       map[string]int64{},
		topicMetrics: map[string]topicCounters{},
		chunks:       newFreeList(spareChunks, func() *chunk { return &chunk{buf: make([]byte, 0, arenaChunk)} }),
		bufs:         newFreeList(8, func() *batchBuf { return new(batchBuf) }),
		lz4s:         newFreeList(8, func() *lz4.CompressorCCompat { return new(lz4.CompressorCCompat) }),
	}
	s.stop, s.cancelStop = context.WithCancel(context.Background())
	m, err := newMetrics(reg, s)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.tr, s.w = newWriter(cfg)
	return s, nil
}

// newWriter builds the transport and writer for cfg. Every kafka-go default
// that matters is set explicitly; see the comments for why.
func newWriter(cfg Config) (*kafka.Transport, *kafka.Writer) {
	tr := &kafka.Transport{
		DialTimeout: cfg.DialTimeout,
		ClientID:    cfg.ClientID,
		TLS:         cfg.TLS,
		SASL:        cfg.SASL,
	}
	w := &kafka.Writer{
		Addr:      kafka.TCP(cfg.Brokers...),
		Transport: tr,
		// kafka-go defaults to RequireNone, fire and forget.
		RequiredAcks: cfg.Acks.required(),
		// Java-compatible key hashing; a nil key goes to a random partition.
		Balancer: kafka.Murmur2Balancer{},
		// The shipper writes through the transport itself (produce.go), one
		// produce request per partition and call, which succeeds or fails
		// as a whole: that is what keeps retries in order. These limits are
		// the ones its calls keep to.
		BatchSize:  cfg.BatchSize,
		BatchBytes: cfg.BatchBytes,
		// The shipper lingers itself. kafka-go's timer (default 1s) would
		// hold every partial batch of a synchronous write that long; 1ns
		// sends a partition's batch as soon as the call has filled it.
		BatchTimeout: time.Nanosecond,
		// One attempt: the shipper retries, with backoff its context can
		// cancel. kafka-go's own retries sleep uninterruptibly, hold Close,
		// and give up after MaxAttempts.
		MaxAttempts:            1,
		ReadTimeout:            cfg.WriteTimeout,
		WriteTimeout:           cfg.WriteTimeout,
		Compression:            cfg.Compression,
		AllowAutoTopicCreation: cfg.AutoCreateTopics,
	}
	return tr, w
}

// recordSize is the size kafka-go's Writer gives a message (its unexported
// Message.totalSize): what it adds up against BatchBytes. The shipper must
// count the same way, or kafka-go could split a batch the shipper believes
// fits, and a split batch can be half written.
func recordSize(key, value []byte, shared *Headers, headers []kafka.Header) int64 {
	n := int64(4 + 1 + 1 + (4 + len(key)) + (4 + len(value)) + 8)
	count := len(headers)
	if shared != nil {
		count += shared.n
		n += shared.size
	}
	n += int64(varintLen(count))
	for _, h := range headers {
		n += headerSize(h)
	}
	return n
}

// headerSize is a header's part of recordSize.
func headerSize(h kafka.Header) int64 {
	return int64(varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value))
}

// varintLen is the length of n as a zig-zag varint.
func varintLen(n int) int {
	u := uint64(n) << 1 // n >= 0
	l := 1
	for u >= 0x80 {
		u >>= 7
		l++
	}
	return l
}

// Send hands r to the shipper. It blocks while the in-flight bound is
// reached, and returns ctx's error if ctx ends first, or ErrStopped once Run
// has returned; in both cases the record was not accepted and its Ack will
// not be called. Once Send returns nil, Ack will be called exactly once
// (unless Run stops first). A record that can never be written (illegal
// topic name, larger than BatchBytes) is accepted and acked with an error.
//
// Send is a Batch of one record: a caller with many records (a tailer)
// adds them to a Batch and sends it, for one lock and one wait in all.
func (s *Shipper) Send(ctx context.Context, r Record) error {
	b := Batch{s: s}
	b.Add(&r)
	_, err := b.Send(ctx)
	return err
}

// initEntry sets e, a new or recycled entry, for r, without its body: its
// sizes, its weight, and whether it can ever be written. (In place: an
// entry is too large to be returned and copied once per line.)
func (s *Shipper) initEntry(e *entry, r *Record) {
	*e = entry{topic: r.Topic, ack: r.Ack, token: r.Token}
	e.size = recordSize(r.Key, r.Value, r.Shared, r.Headers)
	e.payload = int64(len(r.Key) + len(r.Value))
	if r.Shared != nil {
		e.payload += r.Shared.payload
	}
	for _, h := range r.Headers {
		e.payload += int64(len(h.Key) + len(h.Value))
	}
	// A record above the bound weighs the whole bound: it waits until
	// everything else is acked, then goes alone, instead of never fitting.
	// The weight approximates the memory a record holds while in flight:
	// its bytes plus what tracking it costs here and in the caller, so
	// that --max-inflight-bytes bounds the process's memory, not just
	// payload.
	e.weight = min(e.size+recordOverhead, s.cfg.MaxInflightBytes)
	switch {
	case !validTopic(r.Topic):
		e.reject = &RejectedError{Topic: r.Topic, Reason: "invalid_topic",
			Err: fmt.Errorf("not a legal Kafka topic name (1 to 249 of [A-Za-z0-9._-]): %w", kafka.InvalidTopic)}
	case e.size > s.cfg.BatchBytes:
		e.reject = &RejectedError{Topic: r.Topic, Reason: "message_size_too_large",
			Err: fmt.Errorf("record of %d bytes exceeds --kafka-batch-bytes %d: %w", e.size, s.cfg.BatchBytes, kafka.MessageSizeTooLarge)}
	}
	if e.reject != nil {
		e.size = 0 // never written: takes no room in a batch
	}
}

// reserve takes weight of the in-flight bound for recs records, waiting
// for room (see acquire).
func (s *Shipper) reserve(ctx context.Context, weight, recs int64) error {
	if !s.sem.TryAcquire(weight) {
		if err := s.acquire(ctx, weight); err != nil {
			return err
		}
	}
	s.inflight.Add(weight)
	s.inflightRecs.Add(recs)
	return nil
}

// enqueueLocked appends q, an entry that is the shipper's from now on, to
// pending and says whether Run needs to hear of it.
func (s *Shipper) enqueueLocked(q *entry) (poke bool) {
	q.seq = s.nextSeq
	q.epoch = s.epoch.Load()
	s.nextSeq++
	wasEmpty := len(s.pending) == 0
	if wasEmpty {
		s.pendSince = time.Now()
	}
	before := s.pendBytes
	s.pending = append(s.pending, q)
	s.pendBytes += q.size
	// Run needs to hear of the first record (to start the linger) and of a
	// full batch (to stop it); otherwise it is lingering or writing and will
	// look again by itself.
	return wasEmpty || len(s.pending) == s.cfg.BatchSize ||
		(before < s.cfg.BatchBytes && s.pendBytes >= s.cfg.BatchBytes)
}

// arenaChunk is the size of the blocks records are encoded into, and
// spareChunks how many emptied ones are kept for reuse: enough to absorb
// the churn of a steady stream, whose chunks empty as fast as new ones fill.
const (
	arenaChunk  = 256 << 10
	spareChunks = 16
)

// chunk is a block of the arena. It holds no pointers, and goes back to the
// spares once nothing refers to it any more.
type chunk struct {
	buf []byte // len: the bytes handed out
	// refs counts the entries whose body is in buf, plus one while it is
	// the arena's current chunk: whoever takes it to zero recycles it.
	refs atomic.Int32
}

// unref drops n references to c, and recycles c with the last.
func (s *Shipper) unref(c *chunk, n int32) {
	if c.refs.Add(-n) == 0 {
		c.buf = c.buf[:0]
		s.chunks.put(c)
	}
}

// carveLocked copies the bodies of es, which a Batch encoded one after the
// other at the start of buf, into the arena, and points each entry at its
// copy and its chunk, which it holds a reference to. Bodies are copied, and
// counted against their chunk, in runs as long as the chunk has room. A
// body of more than a quarter chunk gets an array of its own (and no
// chunk).
func (s *Shipper) carveLocked(es []*entry, buf []byte) {
	const large = arenaChunk / 4
	for i := 0; i < len(es); {
		e := es[i]
		n := len(e.body)
		switch {
		case e.body == nil: // rejected
			i++
			continue
		case n > large:
			e.body, e.chunk = append(make([]byte, 0, n), e.body...), nil
			buf = buf[n:]
			i++
			continue
		}
		c := s.arena
		if c == nil || cap(c.buf)-len(c.buf) < n {
			if c != nil {
				s.unref(c, 1)
			}
			c = s.chunks.get()
			c.refs.Store(1)
			s.arena = c
		}
		// The run: the bodies after e, up to one that is rejected, large,
		// or beyond the chunk's room.
		room, size, j := cap(c.buf)-len(c.buf), n, i+1
		for ; j < len(es); j++ {
			m := len(es[j].body)
			if es[j].body == nil || m > large || size+m > room {
				break
			}
			size += m
		}
		at := len(c.buf)
		c.buf = append(c.buf, buf[:size]...) // within cap
		buf = buf[size:]
		for _, e := range es[i:j] {
			m := len(e.body)
			e.body, e.chunk = c.buf[at:at+m:at+m], c // capped: never appends into the next record
			at += m
		}
		c.refs.Add(int32(j - i))
		i = j
	}
}

// appendBody appends r's key, value and headers as a v2 record batch holds
// them (after the offset delta).
func appendBody(b []byte, r *Record) []byte {
	if len(r.Key) == 0 {
		// Null, not empty: murmur2 hashes an empty key to one fixed
		// partition, where a null one spreads.
		b = binary.AppendVarint(b, -1)
	} else {
		b = appendNullBytes(b, r.Key)
	}
	// A value is never null, even for an empty line: a null value is a
	// tombstone, which would delete the key on a compacted topic.
	b = binary.AppendVarint(b, int64(len(r.Value)))
	b = append(b, r.Value...)
	if r.Shared != nil {
		b = binary.AppendVarint(b, int64(r.Shared.n+len(r.Headers)))
		b = append(b, r.Shared.enc...)
	} else {
		b = binary.AppendVarint(b, int64(len(r.Headers)))
	}
	for _, h := range r.Headers {
		b = appendHeader(b, h)
	}
	return b
}

func appendHeader(b []byte, h kafka.Header) []byte {
	b = binary.AppendVarint(b, int64(len(h.Key)))
	b = append(b, h.Key...)
	return appendNullBytes(b, h.Value)
}

// takeFreeLocked appends up to n free entries to dst (fewer if fewer are
// free: a Batch allocates the rest).
func (s *Shipper) takeFreeLocked(dst []*entry, n int) []*entry {
	k := min(n-len(dst), len(s.free))
	if k <= 0 {
		return dst
	}
	dst = append(dst, s.free[len(s.free)-k:]...)
	clear(s.free[len(s.free)-k:])
	s.free = s.free[:len(s.free)-k]
	return dst
}

// acquire is Send's slow path: wait for room, for ctx, or for Run to stop.
func (s *Shipper) acquire(ctx context.Context, weight int64) error {
	if !s.blocked.Swap(true) {
		s.poke()
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	unhook := context.AfterFunc(s.stop, func() { cancel(ErrStopped) })
	defer unhook()
	if err := s.sem.Acquire(actx, weight); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrStopped
	}
	return nil
}

// releaseWeight gives the room of recs records back. The counters go down
// before the semaphore, so that they never show more than the bound.
func (s *Shipper) releaseWeight(weight, recs int64) {
	s.inflight.Add(-weight)
	s.inflightRecs.Add(-recs)
	s.sem.Release(weight)
}

func (s *Shipper) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// InflightBytes is the weight of records accepted and not yet acked: what
// MaxInflightBytes bounds (a record counts its kafka-go size, at most the bound).
func (s *Shipper) InflightBytes() int64 { return s.inflight.Load() }

// Flush waits until every record accepted before the call is acked (with or
// without error). Records still lingering are written at once. It returns
// ctx's error if ctx ends first, and ErrStopped if Run returns first.
func (s *Shipper) Flush(ctx context.Context) error {
	s.mu.Lock()
	target := s.nextSeq
	if target > s.flushSeq {
		s.flushSeq = target
	}
	s.mu.Unlock()
	s.poke()
	for {
		s.mu.Lock()
		done, stopped, ch := s.doneSeq, s.stopped, s.progress
		s.mu.Unlock()
		switch {
		case done >= target:
			return nil
		case stopped:
			return fmt.Errorf("ship: flush: %d records not acknowledged: %w", target-done, ErrStopped)
		}
		select {
		case <-ch:
		case <-s.stop.Done():
		case <-ctx.Done():
			return fmt.Errorf("ship: flush: %d records not yet acknowledged: %w", target-done, ctx.Err())
		}
	}
}

// SetGate makes the shipper ask gate right before it writes each produce
// request. While gate returns false, the records whose turn comes are
// dropped unwritten and acked with ErrFenced. The agent's gate is its
// lease: once it cannot prove the lease alive, its files may already be
// another agent's, and Kafka writes cannot be fenced by etcd, so the agent
// fences itself here, as late as possible before the bytes leave. Call it
// before Run.
func (s *Shipper) SetGate(gate func() bool) { s.gate = gate }

// Fence drops, unwritten, every record accepted so far that is not on the
// wire yet: each is acked with ErrFenced when its turn comes. Records
// accepted after Fence returns are written as usual. The agent fences when
// it loses the proof of its lease: what its files' old runs sent must not
// reach Kafka once another agent may own them, even if a lease is proved
// again before their turn comes.
func (s *Shipper) Fence() {
	s.mu.Lock()
	s.epoch.Add(1)
	s.mu.Unlock()
	s.poke()
}

// Run batches and writes records until ctx ends, then closes the writer and
// returns nil. It does not flush: call Flush first for a clean shutdown.
// Records not acked by then never will be. Run may be called once.
func (s *Shipper) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	s.log.Info("shipping to kafka", "brokers", s.cfg.Brokers, "acks", s.cfg.Acks.String(),
		"compression", compressionName(s.cfg.Compression), "batch_size", s.cfg.BatchSize,
		"batch_bytes", s.cfg.BatchBytes, "linger", s.cfg.Linger, "max_inflight_bytes", s.cfg.MaxInflightBytes,
		"tls", s.cfg.TLS != nil, "sasl", s.cfg.SASL != nil)
	defer s.shutdown()

	// While a batch is written, the next one is taken and encoded: its
	// encoding (compression above all) overlaps the broker's work on the
	// batch in flight instead of following it. It is sent only once the
	// batch in flight is acked.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var wg sync.WaitGroup
	defer wg.Wait() // before shutdown (deferred after it, so run before)
	next := func() <-chan *prepared {
		ch := make(chan *prepared, 1)
		wg.Go(func() { ch <- s.prepare(ctx, timer) })
		return ch
	}
	ch := next()
	for {
		p := <-ch
		if p == nil {
			return nil
		}
		ch = next()
		s.ship(ctx, p)
		if ctx.Err() != nil {
			// The next batch, if prepare took one, is never written.
			if p := <-ch; p != nil {
				p.release(s)
			}
			return nil
		}
	}
}

func (s *Shipper) shutdown() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.cancelStop()
	// Wait for produce requests already sent (each ends within
	// WriteTimeout), as kafka-go's Writer.Close did for its own; the
	// transport owns the connections and the metadata goroutine.
	s.inflightReqs.Wait()
	if err := s.w.Close(); err != nil {
		s.log.Warn("close kafka writer", "err", err)
	}
	s.tr.CloseIdleConnections()
	if n := s.inflightRecs.Load(); n > 0 {
		s.log.Info("stopped with records not acknowledged; they were not checkpointed", "records", n, "bytes", s.inflight.Load())
	} else {
		s.log.Info("stopped")
	}
}

// nextBatch waits for a batch to be due (full, lingered enough, flushed, or
// senders out of room)
// and takes it from pending. It returns nil when ctx ends.
func (s *Shipper) nextBatch(ctx context.Context, timer *time.Timer) []*entry {
	for {
		s.mu.Lock()
		if n := len(s.pending); n > 0 {
			head := s.pending[0]
			wait := s.cfg.Linger - time.Since(s.pendSince)
			if wait <= 0 || n >= s.cfg.BatchSize || s.pendBytes >= s.cfg.BatchBytes || head.seq < s.flushSeq || s.blocked.Load() {
				s.blocked.Store(false)
				b := s.takeLocked()
				s.mu.Unlock()
				return b
			}
			s.mu.Unlock()
			timer.Reset(wait)
		} else {
			s.mu.Unlock()
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// takeLocked takes the longest prefix of pending that fits one batch.
func (s *Shipper) takeLocked() []*entry {
	n, bytes := s.nextCall(s.pending, s.cfg.BatchBytes)
	// The batch is copied out and pending moved down, so that pending's
	// array is used over and over: sliced off the front, it would run out
	// of room at its end and be reallocated every few batches. The copy is
	// a few pointers per record; complete hands the batch's array back.
	var b []*entry
	if k := len(s.spareBatches); k > 0 {
		b = s.spareBatches[k-1]
		s.spareBatches = s.spareBatches[:k-1]
	}
	b = append(b[:0], s.pending[:n]...)
	rest := copy(s.pending, s.pending[n:])
	clear(s.pending[rest:])
	s.pending = s.pending[:rest]
	s.pendBytes -= bytes
	if len(s.pending) > 0 {
		s.pendSince = time.Now()
	}
	return b
}

// complete records that every record of b is acked, and keeps b's entries
// for the next Sends: nothing refers to them any more.
func (s *Shipper) complete(b []*entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.doneSeq = b[len(b)-1].seq + 1
	close(s.progress)
	s.progress = make(chan struct{})
	// Beyond a batch or two of spares, leave them to the collector. (They
	// hold no payload any more, release let it go; initEntry sets them
	// anew.)
	if room := 2*s.cfg.BatchSize - len(s.free); room > 0 {
		s.free = append(s.free, b[:min(len(b), room)]...)
	}
	clear(b)
	if len(s.spareBatches) < 2 { // one in flight, one prepared
		s.spareBatches = append(s.spareBatches, b[:0])
	}
}
