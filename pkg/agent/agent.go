package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/heartbeat"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

// Config configures an Agent.
type Config struct {
	Client  *clientv3.Client
	Space   keyspace.Space
	ID      string // agent id: /topics/<P>/<ID>, /assign/<ID>/...
	Version string // build version, reported in heartbeats

	AllowPaths         []string      // roots files may be read under
	FingerprintBytes   int           // leading bytes that identify a file
	ScanInterval       time.Duration // rescan of globs (also on topic changes)
	CheckpointInterval time.Duration
	LeaseTTL           time.Duration
	RotatedIdle        time.Duration // a rotated file idle this long is finished
	// PartialLineTimeout, when positive, ships a last line without newline
	// once its file has not grown for this long.
	PartialLineTimeout time.Duration
	// TailInotify makes nxadm/tail use inotify instead of polling (250 ms).
	TailInotify bool
	// NoDirWatch turns off the directory watcher (inotify): new files are
	// then found by the scans only, so a file that lives under a matched
	// name for less than a scan interval can be missed.
	NoDirWatch bool
	// StopTimeout bounds the wait for Kafka's acks on a clean stop and on a
	// handover release.
	StopTimeout time.Duration

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

	started time.Time
	ready   chan struct{} // closed once topics are loaded
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
	return &Agent{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "agent", "agent", cfg.ID),
		m:       m,
		reg:     reg,
		scanner: scanner,
		store:   topics.NewStore(cfg.Client, cfg.Space),
		ready:   make(chan struct{}),
	}, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Ready returns nil once the agent holds its lease with every key written
// and has loaded the topic directories.
func (a *Agent) Ready() error {
	select {
	case <-a.ready:
	default:
		return errors.New("topic directories not loaded yet")
	}
	if a.reg.Lease() == 0 {
		return errors.New("no etcd lease held")
	}
	return nil
}

// events the control loop receives.
type (
	tailerExit struct {
		fr   *fileRun
		err  error
		done chan struct{} // identifies the run that ended
	}
	releaseDone struct {
		fr     *fileRun
		result string
	}
)

// ended is a goroutine's end: done closes once it returned, and err then
// holds what it returned. Unlike a channel of its error, it can be waited
// on by the control loop and again by the clean stop.
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

// parts are the goroutines the control loop watches.
type parts struct {
	ship, reg, topicsWatch, assignWatch *ended
}

// Run runs the agent until ctx is done (nil) or a part of it fails.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	am, err := mirror.New(a.cfg.Client, []string{a.cfg.Space.AgentAssignPrefix(a.cfg.ID)}, mirror.WithLogger(a.log))
	if err != nil {
		return err
	}
	// The shipper and the lease outlive ctx: the clean stop below still
	// needs Kafka for the last acks and the lease for the final checkpoints.
	shipCtx, shipCancel := context.WithCancel(context.Background())
	regCtx, regCancel := context.WithCancel(context.Background())
	var p parts
	p.ship = goEnded(func() error { return a.cfg.Shipper.Run(shipCtx) })
	p.reg = goEnded(func() error { return a.reg.Run(regCtx) })

	loopCtx, loopCancel := context.WithCancel(ctx)
	defer loopCancel()
	l := newLoop(a)
	topicEvents := make(chan topics.Event)
	assignBatches := make(chan mirror.Batch)
	p.topicsWatch = goEnded(func() error {
		return a.store.Watch(loopCtx, a.log, func(ev topics.Event) error {
			select {
			case topicEvents <- ev:
				return nil
			case <-loopCtx.Done():
				return loopCtx.Err()
			}
		})
	})
	found := make(chan discovery.Found, 64)
	watchDone := make(chan struct{})
	// The directory watcher: new files within microseconds, not a scan
	// interval.
	if !a.cfg.NoDirWatch {
		w, err := a.scanner.NewWatcher(a.log)
		if err != nil {
			a.log.Warn("no directory watcher; new files are found by the scans only", "err", err, "scan_interval", a.cfg.ScanInterval)
		} else {
			l.watcher = w
		}
	}
	if l.watcher != nil {
		go func() {
			defer close(watchDone)
			err := l.watcher.Run(loopCtx, func(f discovery.Found) bool {
				select {
				case found <- f:
					return true
				case <-loopCtx.Done():
					return false
				}
			}, l.triggerScan)
			if err != nil && loopCtx.Err() == nil {
				a.log.Error("directory watcher stopped; new files are found by the scans only", "err", err)
			}
		}()
	} else {
		close(watchDone)
	}
	p.assignWatch = goEnded(func() error {
		return am.Run(loopCtx, func(b mirror.Batch) error {
			select {
			case assignBatches <- b:
				return nil
			case <-loopCtx.Done():
				return loopCtx.Err()
			}
		})
	})

	runErr := l.run(loopCtx, topicEvents, assignBatches, found, p)
	loopCancel()
	<-watchDone
	for drained := false; !drained; {
		select {
		case f := <-found:
			f.FD.Close()
		default:
			drained = true
		}
	}

	// Clean stop: tailers first, then Kafka's acks, then final checkpoints,
	// then the lease.
	l.stopAllTailers()
	l.releasing.Wait()
	l.closeAllHeld()
	fctx, fcancel := context.WithTimeout(context.Background(), a.cfg.StopTimeout)
	if err := a.cfg.Shipper.Flush(fctx); err != nil {
		a.log.Warn("stop: not every record was acknowledged in time; they will be read again after restart",
			"err", err, "inflight_bytes", a.cfg.Shipper.InflightBytes())
	}
	fcancel()
	cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
	l.checkpoint(cctx)
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
	// The watch goroutines end with loopCtx.
	<-p.topicsWatch.done
	<-p.assignWatch.done
	a.log.Info("agent stopped")
	if ctx.Err() != nil && errors.Is(runErr, context.Canceled) {
		return nil
	}
	return runErr
}

// problemKey identifies a problem across scans so its Since is kept.
type problemKey struct{ kind, topic, path string }

func (a *Agent) statusValue(problems map[problemKey]protocol.Problem, lost int64) []byte {
	st := protocol.AgentStatus{Agent: a.cfg.ID, Version: a.cfg.Version, LostBytes: lost, Problems: []protocol.Problem{}}
	for _, p := range problems {
		st.Problems = append(st.Problems, p)
	}
	sortProblems(st.Problems)
	data, err := protocol.Marshal(&st)
	if err != nil {
		a.log.Error("encode agent status", "err", err)
		return nil
	}
	return data
}
