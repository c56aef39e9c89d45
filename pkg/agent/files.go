package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/logferry/logferry/pkg/multiline"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/tailer"
	"github.com/logferry/logferry/pkg/topics"
)

// fileRun is one assigned file: its assignment, its tailer and what Kafka
// has acknowledged of it.
type fileRun struct {
	topic     string
	key       string
	assignKey string
	createRev int64 // of assignKey: the fence of every write for this file
	path      string
	identity  protocol.FileIdentity
	cfg       topics.Config
	cfgRev    int64 // ModRevision of the topic config cfg was checked against

	// Set by the control loop only.
	cancel   context.CancelFunc // stops the tailer; nil when none runs
	done     chan struct{}      // closed when the tailer goroutine returned
	finished bool               // read to its end (rotated away, deleted, gone)
	// finishedAt is when it was read to the end of a rotated file (zero
	// for a file that is gone).
	finishedAt time.Time
	fenced     bool // the guard failed: write nothing more
	releasing  bool
	// held is the descriptor the directory watcher opened, for the first
	// tailer of the file; set by the loop before that tailer starts, taken
	// by it.
	held *os.File

	mu sync.Mutex
	// started is set once the tailer has read the file's checkpoint: until
	// then acked means nothing and no checkpoint may be written (it would
	// overwrite the previous owner's with 0).
	started bool
	// pending holds the bytes (start and End) of every record handed to the
	// shipper and not yet acknowledged, in sequence order, with its ack
	// state; acked is the checkpoint candidate.
	pending pendingQueue
	head    uint64 // seq of the oldest pending record
	nextSeq uint64
	acked   int64 // End of the last line of the acknowledged prefix
	written int64 // last checkpoint written to etcd (-1: none yet)
	size    int64 // file size last seen, for bytes behind
	// writtenSize is the size in the last checkpoint: a checkpoint is also
	// rewritten when only the size moved, so lag read from etcd stays true
	// while Kafka acknowledges nothing.
	writtenSize int64
	drained     chan struct{} // closed and replaced whenever pending empties
}

type pendingRec struct {
	start, end int64
	done       bool
}

func newFileRun(topic, key, assignKey string, createRev int64, path string, id protocol.FileIdentity, cfg topics.Config) *fileRun {
	return &fileRun{topic: topic, key: key, assignKey: assignKey, createRev: createRev, path: path, identity: id,
		cfg: cfg, written: -1, drained: make(chan struct{})}
}

// nextSequence is the sequence the next record tracked will get.
func (f *fileRun) nextSequence() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nextSeq
}

// trackAll registers records about to be sent, the first with sequence
// first (nextSequence: one sink sends for a file at a time). It refuses
// them, and returns false, if first is not the next sequence.
func (f *fileRun) trackAll(first uint64, recs []pendingRec) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if first != f.nextSeq {
		return false
	}
	f.pending.push(recs)
	f.nextSeq += uint64(len(recs))
	return true
}

// untrackFrom drops the newest records, from sequence seq on: the shipper
// did not accept them (ctx ended, or it stopped), so they are never acked.
func (f *fileRun) untrackFrom(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq >= f.nextSeq || seq < f.head {
		return
	}
	f.pending.truncate(int(seq - f.head))
	f.nextSeq = seq
	f.signalDrainedLocked()
}

// ack marks record seq done (acknowledged, or refused for good: it is
// skipped), advances the acknowledged prefix and returns the record's bytes
// (start to end of the file).
func (f *fileRun) ack(seq uint64) (start, end int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i := int(seq - f.head); i >= 0 && i < f.pending.len() {
		p := f.pending.at(i)
		start, end = p.start, p.end
	}
	f.markLocked(seq, seq)
	return start, end
}

// ackRange marks records first to last acknowledged, like ack for each,
// and returns how many of them were pending and their bytes.
func (f *fileRun) ackRange(first, last uint64) (n int, bytes int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.markLocked(first, last)
}

// markLocked marks the pending records first to last done (those not
// done yet: it returns how many, and their bytes) and advances the
// acknowledged prefix.
func (f *fileRun) markLocked(first, last uint64) (n int, bytes int64) {
	for seq := first; seq <= last; seq++ {
		i := int(seq - f.head)
		if i < 0 || i >= f.pending.len() {
			continue
		}
		p := f.pending.at(i)
		if p.done {
			continue
		}
		p.done = true
		n++
		bytes += p.end - p.start
	}
	f.advanceLocked()
	return n, bytes
}

// advanceLocked moves the acknowledged prefix past the records done.
func (f *fileRun) advanceLocked() {
	n := 0
	for n < f.pending.len() && f.pending.at(n).done {
		f.acked = f.pending.at(n).end
		n++
	}
	if n > 0 {
		f.pending.dropOldest(n)
		f.head += uint64(n)
		f.signalDrainedLocked()
	}
}

func (f *fileRun) signalDrainedLocked() {
	if f.pending.len() == 0 {
		close(f.drained)
		f.drained = make(chan struct{})
	}
}

// waitDrained blocks until nothing sent for the file awaits an ack.
func (f *fileRun) waitDrained(ctx context.Context) error {
	for {
		f.mu.Lock()
		if f.pending.len() == 0 {
			f.mu.Unlock()
			return nil
		}
		ch := f.drained
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// checkpointDue returns the offset to write and the size to record, and
// whether either moved since the last write.
func (f *fileRun) checkpointDue() (offset, size int64, due bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked, f.size, f.started && (f.acked != f.written || f.size != f.writtenSize)
}

func (f *fileRun) markWritten(off, size int64) {
	f.mu.Lock()
	if off > f.written || f.written < 0 {
		f.written = off
	}
	f.writtenSize = size
	f.mu.Unlock()
}

// ackedOffset is the acknowledged prefix.
func (f *fileRun) ackedOffset() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked
}

// lineSink turns tailer lines into Kafka records for one file. Its methods
// are called by one goroutine at a time (the tailer's, or under
// joinedSink.mu), except Ack and AckRange, which the shipper calls.
type lineSink struct {
	a  *Agent
	fr *fileRun
	// What every record of the file shares, built once per tailer run
	// rather than once per line: header values, the partition key and the
	// topic's counters.
	host, path, file, topic []byte
	key                     []byte
	linesRead, bytesRead    prometheus.Counter
	linesShipped, bytesShip prometheus.Counter
	rejected                prometheus.Counter
	// shared are the headers every record of the file carries (host,
	// path, file, topic), encoded once.
	shared *ship.Headers
	// headers and off are the scratch of send: the batch copies a record
	// at Add, so one set serves every line.
	headers []kafka.Header
	off     [20]byte
	// batch gathers the records of the lines read since the last flush;
	// pend holds their bytes, the sequence of the first being base. They
	// are tracked and handed to the shipper together, at the tailer's
	// Flush (before it waits for more), or every sinkBatch lines: one lock
	// of the file's state and one of the shipper's for them all.
	batch *ship.Batch
	base  uint64
	pend  []pendingRec
}

// sinkBatch is how many lines a sink gathers at most before it flushes
// (about 40 KB of typical lines: the scratch a busy sink keeps).
const sinkBatch = 128

func newLineSink(a *Agent, fr *fileRun) *lineSink {
	s := &lineSink{
		a: a, fr: fr,
		host: []byte(a.cfg.ID), path: []byte(fr.path), file: []byte(fr.key), topic: []byte(fr.topic),
		linesRead:    a.m.linesRead.WithLabelValues(fr.topic),
		bytesRead:    a.m.bytesRead.WithLabelValues(fr.topic),
		linesShipped: a.m.linesShipped.WithLabelValues(fr.topic),
		bytesShip:    a.m.bytesShipped.WithLabelValues(fr.topic),
		rejected:     a.m.rejected.WithLabelValues(fr.topic),
		headers:      make([]kafka.Header, 0, 8),
		batch:        a.cfg.Shipper.NewBatch(),
	}
	s.shared = ship.NewHeaders(
		kafka.Header{Key: "host", Value: s.host},
		kafka.Header{Key: "path", Value: s.path},
		kafka.Header{Key: "file", Value: s.file},
		kafka.Header{Key: "topic", Value: s.topic},
	)
	switch fr.cfg.Key {
	case topics.KeyFile:
		s.key = s.file
	case topics.KeyHost:
		s.key = s.host
	}
	return s
}

func (s *lineSink) emit(ctx context.Context, l tailer.Line) error {
	return s.send(ctx, l, 0, false)
}

// emitEvent ships a multiline event as one record.
func (s *lineSink) emitEvent(ctx context.Context, e multiline.Event) error {
	return s.send(ctx, tailer.Line{Start: e.Start, End: e.End, Data: e.Data, Last: true, Truncated: e.Truncated, NoNewline: e.NoNewline},
		e.Lines, e.Cut)
}

// send builds one record from a line (or an event of lines joined, with
// its line count and whether it was cut at max lines) and adds it to the
// sink's batch; flush tracks the batch's records and hands them over.
func (s *lineSink) send(ctx context.Context, l tailer.Line, lines int, cut bool) error {
	fr, a := s.fr, s.a
	headers := append(s.headers[:0],
		kafka.Header{Key: "offset", Value: strconv.AppendInt(s.off[:0], l.Start, 10)})
	flag := func(name, value string) {
		headers = append(headers, kafka.Header{Key: name, Value: []byte(value)})
		a.m.flagged.WithLabelValues(fr.topic, name).Inc()
	}
	if l.Part > 0 {
		flag("part", strconv.Itoa(l.Part))
		if l.Last {
			flag("last_part", "true")
		}
	}
	if l.Truncated {
		flag("truncated", "true")
	}
	if l.NoNewline {
		flag("no_newline", "true")
	}
	if !utf8.Valid(l.Data) {
		flag("invalid_utf8", "true")
	}
	if lines > 1 {
		flag("lines", strconv.Itoa(lines))
	}
	if cut {
		flag("multiline_cut", "true")
	}
	s.headers = headers[:0]
	if len(s.pend) == 0 {
		s.base = fr.nextSequence()
	}
	s.batch.Add(&ship.Record{
		Topic:   fr.cfg.KafkaTopic,
		Key:     s.key,
		Value:   l.Data,
		Shared:  s.shared,
		Headers: headers,
		Ack:     s,
		Token:   s.base + uint64(len(s.pend)),
	})
	s.pend = append(s.pend, pendingRec{start: l.Start, end: l.End})
	if len(s.pend) >= sinkBatch {
		return s.flush(ctx)
	}
	return nil
}

// flush tracks the gathered records and hands them to the shipper. Those
// the shipper did not accept (ctx ended, or it stopped) are untracked: they
// were never sent, so the file is read again from before them.
func (s *lineSink) flush(ctx context.Context) error {
	if len(s.pend) == 0 {
		return nil
	}
	var bytes int64
	for _, p := range s.pend {
		bytes += p.end - p.start
	}
	s.linesRead.Add(float64(len(s.pend)))
	s.bytesRead.Add(float64(bytes))
	if !s.fr.trackAll(s.base, s.pend) {
		// Another sink sent for the file meanwhile (a bug): the records'
		// sequences are wrong, so they are dropped, and the tailer ends;
		// the file is read again from what was tracked.
		s.close()
		return fmt.Errorf("agent: lines of %s gathered from sequence %d, but the file is at %d: dropped to be read again",
			s.fr.path, s.base, s.fr.nextSequence())
	}
	n, err := s.batch.Send(ctx)
	if err != nil {
		s.fr.untrackFrom(s.base + uint64(n))
	}
	s.pend = s.pend[:0]
	return err
}

// close lets go of the sink's batch; lines not flushed are dropped (and
// were never tracked).
func (s *lineSink) close() {
	s.batch.Close()
	s.pend = s.pend[:0]
}

// AckRange is the shipper's word that records first to last of the file
// were acknowledged: one lock and one update of each counter for them all.
func (s *lineSink) AckRange(first, last uint64) {
	n, bytes := s.fr.ackRange(first, last)
	s.linesShipped.Add(float64(n))
	s.bytesShip.Add(float64(bytes))
}

// Ack is the shipper's word on record seq of the file.
func (s *lineSink) Ack(seq uint64, err error) {
	if err == nil {
		s.AckRange(seq, seq)
		return
	}
	start, _ := s.fr.ack(seq)
	s.rejected.Inc()
	if errors.Is(err, ship.ErrRejected) {
		s.a.log.Error("record rejected by Kafka; reported and skipped", "topic", s.fr.topic,
			"path", s.fr.path, "offset", start, "err", err)
	}
}

// joinedSink joins lines into multiline events before shipping them. A
// pending event is shipped when a line ends it, when the topic's timeout
// passes without a new line, or when the file is finished; it is never
// checkpointed before it is shipped, so a crash re-reads it whole.
type joinedSink struct {
	sink    *lineSink
	timeout time.Duration

	mu      sync.Mutex // orders Add, Flush and their sends
	j       *multiline.Joiner
	lastAdd time.Time
}

func newJoinedSink(s *lineSink, m *topics.Multiline) (*joinedSink, error) {
	j, err := multiline.New(m, s.fr.cfg.MaxLineBytes)
	if err != nil {
		return nil, err
	}
	return &joinedSink{sink: s, timeout: m.Timeout.Std(), j: j}, nil
}

func (js *joinedSink) emit(ctx context.Context, l tailer.Line) error {
	js.mu.Lock()
	defer js.mu.Unlock()
	js.lastAdd = time.Now()
	for _, e := range js.j.Add(l) {
		if err := js.sink.emitEvent(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// flush ships the pending event, if any (idle says: only if no line came
// for the timeout).
func (js *joinedSink) flush(ctx context.Context, idle bool) error {
	js.mu.Lock()
	defer js.mu.Unlock()
	if !js.j.Pending() || (idle && time.Since(js.lastAdd) < js.timeout) {
		return nil
	}
	e, _ := js.j.Flush()
	if err := js.sink.emitEvent(ctx, e); err != nil {
		return err
	}
	return js.sink.flush(ctx) // no tailer Flush follows an idle event
}

// flushSink hands the events gathered by the sink to the shipper (the
// tailer's Flush).
func (js *joinedSink) flushSink(ctx context.Context) error {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.sink.flush(ctx)
}

// runTimeouts flushes idle events until ctx is done.
func (js *joinedSink) runTimeouts(ctx context.Context) {
	tick := time.NewTicker(max(js.timeout/4, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := js.flush(ctx, true); err != nil {
				return
			}
		}
	}
}
