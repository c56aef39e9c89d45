package agent

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"

	"github.com/logferry/logferry/pkg/multiline"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/tailer"
	"github.com/logferry/logferry/pkg/topics"
)

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
		host: []byte(a.cfg.ID), path: []byte(fr.pathNow()), file: []byte(fr.key), topic: []byte(fr.topic),
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
		// Nothing read since the last flush: the file is quiet. A batch
		// keeps its scratch between busy Sends; a quiet file's sink lets
		// go of it (at 10,000 files after a burst each, 75 MB).
		s.batch.Close()
		s.pend = nil
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
			s.path, s.base, s.fr.nextSequence())
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
	if errors.Is(err, ship.ErrFenced) {
		// Dropped unwritten: never done. The run starts again from its
		// checkpoint (or was already stopped by a fence).
		s.fr.lapse()
		s.a.pokeLapsed()
		return
	}
	start, _ := s.fr.ack(seq)
	s.rejected.Inc()
	if errors.Is(err, ship.ErrRejected) {
		s.a.log.Error("record rejected by Kafka; reported and skipped", "topic", s.fr.topic,
			"path", s.fr.pathNow(), "offset", start, "err", err)
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
