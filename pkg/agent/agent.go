package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/tailer"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/heartbeat"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/statefile"
	"github.com/logferry/logferry/pkg/topics"
)

// Config configures an Agent.
type Config struct {
	Client  *clientv3.Client
	Space   keyspace.Space
	ID      string // agent id: /topics/<P>/<ID>, /assign/<ID>/...
	Version string // build version, reported in heartbeats

	AllowPaths       []string      // roots files may be read under
	FingerprintBytes int           // leading bytes that identify a file
	ScanInterval     time.Duration // rescan of globs (also on topic changes)
	// CheckpointInterval is how often acknowledged offsets are saved: in
	// the state file under StateDir when there is one (the local tier),
	// otherwise in etcd.
	CheckpointInterval time.Duration
	// StateDir holds the local checkpoints (pkg/statefile); "" means none:
	// etcd is then written every EtcdCheckpointInterval (default
	// CheckpointInterval), as the only tier.
	StateDir string
	// EtcdCheckpointInterval is how often etcd gets the offsets that moved
	// (besides releases, clean stops and files read to their end, which go
	// at once). 0 with a StateDir: sized to the fleet, the fleet's files
	// (from /status/coordinator) divided by EtcdCheckpointBudget, between
	// max(CheckpointInterval, 5 s) and 10 min.
	EtcdCheckpointInterval time.Duration
	// EtcdCheckpointBudget is the fleet's etcd checkpoint write rate, in
	// keys per second, that the sized interval aims at (default 2000).
	EtcdCheckpointBudget float64
	LeaseTTL             time.Duration
	RotatedIdle          time.Duration // a rotated file idle this long is finished
	// PartialLineTimeout, when positive, ships a last line without newline
	// once its file has not grown for this long.
	PartialLineTimeout time.Duration
	// TailInotify makes nxadm/tail's notifier use inotify instead of
	// polling, except for the files of shared topics: on a network volume
	// inotify does not see other hosts' writes.
	TailInotify bool
	// NoDirWatch turns off the directory watcher (inotify): new files are
	// then found by the scans only, so a file that lives under a matched
	// name for less than a scan interval can be missed.
	NoDirWatch bool
	// StopTimeout bounds the wait for Kafka's acks on a clean stop and on a
	// handover release.
	StopTimeout time.Duration
	// CloseInactive parks a file that has not grown for this long: its
	// tailer ends, and a write, rename or delete wakes it (park.go).
	// 0 means the default; negative never parks.
	CloseInactive time.Duration
	// MaxStarting bounds how many files are read from their offset to
	// their end at once (starts.go); 0 means DefaultMaxStarting.
	MaxStarting int

	// Shipper is run by the agent, which controls its shutdown order.
	Shipper    *ship.Shipper
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Agent is the logagent engine. Construct with New, drive with Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	reg     *heartbeat.Registrar
	scanner *discovery.Scanner
	store   *topics.Store
	board   *topicBoard
	// lapsed is poked when the shipper dropped a record unwritten.
	lapsed chan struct{}
	// local is the state file, the local checkpoint tier (nil: none).
	local *statefile.Store
	// origins are the files copytruncate copies may continue (copies.go).
	origins *origins
	// parking wakes parked files (park.go).
	parking *parking
	// starts bounds the tailers catching up at once (starts.go).
	starts *starts

	started time.Time
}

// ErrConfig marks an unusable agent configuration.
var ErrConfig = errors.New("agent: bad config")

// New checks cfg and allocates; it starts nothing.
func New(cfg Config) (*Agent, error) {
	if cfg.Client == nil || cfg.Shipper == nil {
		return nil, fmt.Errorf("%w: etcd client and shipper are required", ErrConfig)
	}
	if err := keyspace.ValidateAgent(cfg.ID); err != nil {
		return nil, fmt.Errorf("%w: --id: %w", ErrConfig, err)
	}
	if cfg.FingerprintBytes == 0 {
		cfg.FingerprintBytes = 1024
	}
	for name, d := range map[string]*time.Duration{
		"--scan-interval": &cfg.ScanInterval, "--checkpoint-interval": &cfg.CheckpointInterval,
		"--lease-ttl": &cfg.LeaseTTL, "--rotated-idle": &cfg.RotatedIdle, "--stop-timeout": &cfg.StopTimeout,
	} {
		if *d < 0 {
			return nil, fmt.Errorf("%w: %s %v is negative", ErrConfig, name, *d)
		}
	}
	cfg.ScanInterval = orDefault(cfg.ScanInterval, 10*time.Second)
	cfg.CheckpointInterval = orDefault(cfg.CheckpointInterval, time.Second)
	cfg.LeaseTTL = orDefault(cfg.LeaseTTL, 10*time.Second)
	cfg.RotatedIdle = orDefault(cfg.RotatedIdle, 5*time.Second)
	cfg.StopTimeout = orDefault(cfg.StopTimeout, 5*time.Second)
	cfg.CloseInactive = orDefault(cfg.CloseInactive, DefaultCloseInactive)
	if cfg.MaxStarting < 0 {
		return nil, fmt.Errorf("%w: --max-starting-files %d is negative", ErrConfig, cfg.MaxStarting)
	}
	cfg.MaxStarting = cmp.Or(cfg.MaxStarting, DefaultMaxStarting)
	if cfg.EtcdCheckpointInterval < 0 || cfg.EtcdCheckpointBudget < 0 {
		return nil, fmt.Errorf("%w: --etcd-checkpoint-interval %v and --etcd-checkpoint-budget %v must not be negative",
			ErrConfig, cfg.EtcdCheckpointInterval, cfg.EtcdCheckpointBudget)
	}
	if cfg.StateDir == "" && cfg.EtcdCheckpointInterval == 0 {
		cfg.EtcdCheckpointInterval = cfg.CheckpointInterval
	}
	if cfg.EtcdCheckpointBudget == 0 {
		cfg.EtcdCheckpointBudget = DefaultEtcdCheckpointBudget
	}
	var local *statefile.Store
	if cfg.StateDir != "" {
		var err error
		if local, err = statefile.Open(cfg.StateDir, cfg.ID); err != nil {
			return nil, fmt.Errorf("%w: --state-dir: %w", ErrConfig, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.AllowPaths) == 0 {
		cfg.AllowPaths = []string{"/var/log"}
	}
	scanner, err := discovery.NewScanner(cfg.AllowPaths, cfg.ID, cfg.FingerprintBytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	reg, err := heartbeat.New(heartbeat.Config{Client: cfg.Client, TTL: cfg.LeaseTTL, Logger: cfg.Logger,
		Registerer: cfg.Registerer, MetricsPrefix: "logagent"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	// Self-fencing: nothing goes on the wire unless the lease is proved
	// alive at that moment.
	cfg.Shipper.SetGate(reg.Alive)
	return &Agent{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "agent", "agent", cfg.ID),
		m:       m,
		reg:     reg,
		scanner: scanner,
		store:   topics.NewStore(cfg.Client, cfg.Space),
		board:   newTopicBoard(),
		lapsed:  make(chan struct{}, 1),
		local:   local,
		origins: newOrigins(),
		parking: newParking(),
		starts:  newStarts(cfg.MaxStarting),
	}, nil
}

// DefaultEtcdCheckpointBudget is the fleet's etcd checkpoint write rate (keys
// per second) the sized etcd interval aims at: a few percent of what a
// 3-member etcd on SSDs takes, so leases and the coordinator keep room.
const DefaultEtcdCheckpointBudget = 2000

// DefaultCloseInactive is how long a file must stay quiet before it is
// parked. Waking a parked file costs a goroutine and an inotify watch,
// within milliseconds of the write, so a file need not be quiet for long
// before it costs nothing.
const DefaultCloseInactive = 30 * time.Second

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Ready returns nil once the agent holds a lease proved alive with every
// key written, and has loaded the topic directories; otherwise it says
// why, naming the etcd endpoints when etcd cannot be reached.
func (a *Agent) Ready() error {
	if a.reg.Lease() == 0 {
		if err := a.reg.Err(); err != nil {
			return fmt.Errorf("no etcd lease held: %w", err)
		}
		return fmt.Errorf("no etcd lease held (etcd %v)", a.cfg.Client.Endpoints())
	}
	select {
	case <-a.board.ready:
	default:
		return errors.New("topic directories not loaded yet")
	}
	return nil
}

func (a *Agent) pokeLapsed() { poke(a.lapsed) }

// ended is a goroutine's end: done closes once it returned, and err then
// holds what it returned. Unlike a channel of its error, it can be waited
// on by the controller and again by the clean stop.
type ended struct {
	done chan struct{}
	err  error
}

func goEnded(f func() error) *ended {
	e := &ended{done: make(chan struct{})}
	go func() {
		e.err = f()
		close(e.done)
	}()
	return e
}

// parts are the goroutines the controller watches.
type parts struct {
	ship, reg, topicsWatch, inventory, checkpoints *ended
}

// stopFinalCheckpoint bounds the final checkpoint of a clean stop; the
// releases and Kafka's acks get --stop-timeout before it, and revoking the
// lease at most a second after it, so a stop takes --stop-timeout + 3 s at
// most (8 s by default), whatever etcd and Kafka do.
const stopFinalCheckpoint = 2 * time.Second

// Run runs the agent until ctx is done (nil) or a part of it fails.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	// The shipper and the lease outlive ctx: the clean stop below still
	// needs Kafka for the last acks and the lease for the final checkpoints.
	shipCtx, shipCancel := context.WithCancel(context.Background())
	regCtx, regCancel := context.WithCancel(context.Background())
	var p parts
	p.ship = goEnded(func() error { return a.cfg.Shipper.Run(shipCtx) })
	p.reg = goEnded(func() error { return a.reg.Run(regCtx) })

	loopCtx, loopCancel := context.WithCancel(ctx)
	defer loopCancel()
	probs := newProblems(a)
	lost := newLostLedger(a, probs)
	held := newHeldFiles(a.m.filesHeld)
	inv := newInventory(a, a.board, held, lost, probs)
	cp := newCheckpointer(a)
	c := newController(a, inv, cp, a.board, held, lost, probs)
	p.topicsWatch = goEnded(func() error {
		return a.store.Watch(loopCtx, a.log, func(ev topics.Event) error {
			a.board.apply(ev)
			return nil
		})
	})
	watchDone := make(chan struct{})
	// The directory watcher: new files within microseconds, not a scan
	// interval.
	if !a.cfg.NoDirWatch {
		w, err := a.scanner.NewWatcher(a.log)
		if err != nil {
			a.log.Warn("no directory watcher; new files are found by the scans only", "err", err, "scan_interval", a.cfg.ScanInterval)
		} else {
			inv.watcher = w
		}
	}
	if inv.watcher != nil {
		go func() {
			defer close(watchDone)
			err := inv.watcher.Run(loopCtx, func(f discovery.Found) bool { return inv.hold(loopCtx, f) }, inv.triggerScan, a.parking.touch)
			if err != nil && loopCtx.Err() == nil {
				a.log.Error("directory watcher stopped; new files are found by the scans only", "err", err)
			}
		}()
	} else {
		close(watchDone)
	}
	p.inventory = goEnded(func() error { return inv.Run(loopCtx) })
	p.checkpoints = goEnded(func() error { return cp.Run(loopCtx) })

	runErr := c.run(loopCtx, p)
	loopCancel()
	<-watchDone
	<-p.inventory.done
	<-p.checkpoints.done

	// Clean stop: tailers first, then the releases and Kafka's acks, then
	// final checkpoints, then the lease.
	deadline := time.Now().Add(a.cfg.StopTimeout)
	c.stop(deadline)
	held.closeAll()
	fctx, fcancel := context.WithDeadline(context.Background(), deadline)
	if err := a.cfg.Shipper.Flush(fctx); err != nil {
		a.log.Warn("stop: not every record was acknowledged in time; they will be read again after restart",
			"err", err, "inflight_bytes", a.cfg.Shipper.InflightBytes())
	}
	fcancel()
	cctx, ccancel := context.WithTimeout(context.Background(), stopFinalCheckpoint)
	cp.setRuns(c.runList())
	cp.pass(cctx, true) // every offset that moved goes to etcd: nothing is repeated after a clean stop
	ccancel()
	shipCancel()
	regCancel()
	<-p.ship.done
	if p.ship.err != nil && runErr == nil {
		runErr = p.ship.err
	}
	<-p.reg.done
	if p.reg.err != nil && runErr == nil {
		runErr = p.reg.err
	}
	<-p.topicsWatch.done
	a.log.Info("agent stopped")
	if ctx.Err() != nil && errors.Is(runErr, context.Canceled) {
		return nil
	}
	return runErr
}

// tail reads fr's checkpoint, the first time, and runs its tailer. It
// runs on the tailer's goroutine: the etcd read of the checkpoint never
// holds up the controller.
func (a *Agent) tail(ctx context.Context, fr *fileRun) error {
	if a.scanner.Superseded(fr.identity) {
		// A short file written anew since it was found: its inode holds
		// another file now, with a key of its own.
		return fmt.Errorf("%w: %s was truncated and written again since it was found", tailer.ErrGone, fr.pathNow())
	}
	fr.mu.Lock()
	resumed := fr.started
	fr.mu.Unlock()
	var st start
	if !resumed {
		// Only the first run of the file reads its checkpoint: a run
		// started again (woken from parked, after a stop) knows what was
		// acknowledged. A parked file written once a minute would
		// otherwise cost etcd a read per line.
		var err error
		if st, err = a.startOffset(ctx, fr); err != nil {
			return err
		}
	}
	fr.mu.Lock()
	offset := st.offset
	if !resumed {
		fr.started = true
		fr.acked, fr.local, fr.written = offset, offset, st.etcd
	} else {
		offset = fr.acked // resume after what was acknowledged
		if n := fr.pending.len(); n > 0 {
			offset = fr.pending.at(n - 1).end // records in flight are not read twice
		}
	}
	fr.shedding = false // read again: the queue is needed
	fr.dirty.Store(true)
	path := fr.path
	fr.mu.Unlock()
	sink := newLineSink(a, fr)
	defer sink.close()
	var (
		js  *joinedSink
		err error
	)
	flush := func() error { return sink.flush(ctx) }
	if fr.cfg.Multiline != nil {
		if js, err = newJoinedSink(sink, fr.cfg.Multiline); err != nil {
			return err
		}
		flush = func() error { return js.flushSink(ctx) }
	}
	tl, err := tailer.New(tailer.Config{
		Path: path, File: fr.held, Identity: fr.identity,
		// A file the globs no longer match (found by identity after a
		// rotation) is finished once read to its end and idle.
		Rotated: !a.scanner.Matches(*fr.cfg, path), FingerprintBytes: a.cfg.FingerprintBytes,
		Offset: offset, MaxLineBytes: fr.cfg.MaxLineBytes, Truncate: fr.cfg.LongLines == topics.LongLinesTruncate,
		RotatedIdle: a.cfg.RotatedIdle, Poll: !a.cfg.TailInotify || fr.cfg.Shared, PartialTimeout: a.cfg.PartialLineTimeout, Logger: a.log.With("topic", fr.topic, "file", fr.key),
		OnTruncate: func(old int64) {
			a.log.Warn("file truncated; shipping it again from 0", "topic", fr.topic, "path", path, "old_offset", old)
		},
		Flush:    flush,
		Inactive: max(a.cfg.CloseInactive, 0),
		AtEnd: func(modified time.Time) bool {
			a.starts.give(fr)
			return a.parkAtEnd(fr, modified)
		},
		// Stopped on purpose (fenced, paused, config changed): the next
		// run of the file reads on through the same descriptor. The
		// controller reads fr.held only after this goroutine returned.
		Keep: func(f *os.File) { fr.held = f },
	})
	if err != nil {
		return err // fr.held stays for the next start
	}
	fr.held = nil // the tailer's now
	n := a.cfg.FingerprintBytes
	emit := func(line tailer.Line) error { return sink.emit(ctx, line) }
	stopTimeouts := func() {}
	if js != nil {
		tctx, stop := context.WithCancel(ctx)
		timeouts := make(chan struct{})
		go func() {
			defer close(timeouts)
			js.runTimeouts(tctx)
		}()
		stopTimeouts = func() { stop(); <-timeouts }
		emit = func(line tailer.Line) error { return js.emit(ctx, line) }
	}
	err = tl.Run(ctx, func(line tailer.Line) error {
		fr.noteHead(line, n)
		return emit(line)
	})
	stopTimeouts() // before the last flush: the timeouts flush too
	if js != nil && (errors.Is(err, tailer.ErrFinished) || errors.Is(err, tailer.ErrGone) || errors.Is(err, tailer.ErrInactive)) {
		// Nothing more will come (or not for --close-inactive, far past
		// any multiline timeout): the last event is complete.
		if ferr := js.flush(ctx, false); ferr != nil {
			return ferr
		}
	}
	if errors.Is(err, tailer.ErrInactive) {
		a.parkRun(fr, path, tl.ReadEnd())
	}
	return err
}

// start is where a run begins: offset, and the checkpoint etcd has (-1:
// none), which the etcd tier compares with.
type start struct{ offset, etcd int64 }

// startOffset is where to read the file from: its checkpoint in etcd, or
// the later one of the local state file when etcd's was written by this
// agent for this identity (nobody else shipped the file since: the local
// save is at most a checkpoint interval old), or where start_at says for a
// file never seen.
func (a *Agent) startOffset(ctx context.Context, fr *fileRun) (start, error) {
	// Bounded: the run holds a start slot meanwhile (starts.go), and a
	// slow etcd must not hold every slot.
	rctx, cancel := context.WithTimeout(ctx, txnTimeout)
	cp, found, err := a.getCheckpoint(rctx, fr.ref())
	cancel()
	if err != nil {
		return start{}, err
	}
	st := start{etcd: -1}
	if found {
		st = start{offset: cp.Offset, etcd: cp.Offset}
	}
	if a.local != nil {
		e, ok := a.local.Get(fr.topic, fr.key)
		ours := !found || (cp.Agent == a.cfg.ID && cp.Identity == fr.identity)
		if ok && ours && e.Identity == fr.identity && e.Offset > st.offset {
			a.log.Info("resuming from the local checkpoint, newer than etcd's", "topic", fr.topic, "path", fr.pathNow(),
				"offset", e.Offset, "etcd_offset", st.etcd)
			st.offset = e.Offset
			return st, nil
		}
	}
	if !found {
		if off, ok := a.copiedFrom(ctx, fr); ok {
			st.offset = off
		} else if fr.cfg.StartAt == topics.StartEnd {
			fi, err := os.Stat(fr.pathNow())
			if err != nil {
				return start{}, fmt.Errorf("stat %s: %w", fr.pathNow(), err)
			}
			st.offset = fi.Size()
		}
	}
	a.saveShortIdentity(fr, st.offset)
	return st, nil
}

// saveShortIdentity makes the identity of a file found shorter than the
// fingerprint durable before any line of it is shipped: once the file has
// grown nothing can compute that identity again, and a crash before its
// first checkpoint would otherwise make it another file after the
// restart, shipped again under another key.
func (a *Agent) saveShortIdentity(fr *fileRun, offset int64) {
	if a.local == nil || !fr.identity.Partial {
		return
	}
	if _, ok := a.local.Get(fr.topic, fr.key); ok {
		return
	}
	a.local.Set(fr.topic, fr.key, statefile.Entry{Offset: offset, Identity: fr.identity, Path: fr.pathNow(), Updated: time.Now()})
	if err := a.local.Save(); err != nil {
		a.m.checkpointErr.WithLabelValues("local").Inc()
		a.log.Warn("cannot save a short file's identity; a crash before its first checkpoint would ship it again",
			"topic", fr.topic, "path", fr.pathNow(), "err", err)
	}
}
