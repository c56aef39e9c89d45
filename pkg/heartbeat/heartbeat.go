package heartbeat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/ctxwait"
)

// Config configures a Registrar.
type Config struct {
	Client *clientv3.Client
	// TTL of the lease; rounded up to whole seconds, at least 1 s.
	TTL time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts to
	// grant a lease or write keys (defaults 100 ms and 5 s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// Registerer receives the metrics; nil means none.
	Registerer prometheus.Registerer
	// MetricsPrefix names the metrics ("logagent" gives logagent_lease_...).
	MetricsPrefix string
}

// Registrar holds a set of keys on one etcd lease for as long as it runs.
type Registrar struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	desired map[string][]byte
	dirty   chan struct{}

	lease      atomic.Int64 // current lease id, 0 while none is held
	aliveUntil atomic.Int64 // unix nanoseconds; see AliveUntil
	proofs     chan struct{}
	lastErr    atomic.Pointer[error]

	grants    prometheus.Counter
	losses    prometheus.Counter
	writeErrs prometheus.Counter
	held      prometheus.Gauge
}

// ErrConfig is returned by New for an unusable configuration.
var ErrConfig = errors.New("heartbeat: bad config")

// New checks cfg; it starts nothing.
func New(cfg Config) (*Registrar, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: no etcd client", ErrConfig)
	}
	if cfg.TTL <= 0 || cfg.TTL > time.Hour {
		return nil, fmt.Errorf("%w: lease TTL %v: want between 1s and 1h", ErrConfig, cfg.TTL)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MetricsPrefix == "" {
		cfg.MetricsPrefix = "logferry"
	}
	r := &Registrar{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "heartbeat"),
		desired: map[string][]byte{},
		dirty:   make(chan struct{}, 1),
		proofs:  make(chan struct{}, 1),
		grants: prometheus.NewCounter(prometheus.CounterOpts{
			Name: cfg.MetricsPrefix + "_lease_grants_total",
			Help: "Leases granted; more than one means a lease was lost and the keys were written again.",
		}),
		losses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: cfg.MetricsPrefix + "_lease_losses_total",
			Help: "Leases lost (expired, revoked, or keepalives unanswered for a TTL).",
		}),
		writeErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: cfg.MetricsPrefix + "_lease_key_write_errors_total",
			Help: "Failed writes of keys held on the lease; retried with backoff.",
		}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: cfg.MetricsPrefix + "_lease_held",
			Help: "1 while a lease is held and every key is written on it.",
		}),
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{r.grants, r.losses, r.writeErrs, r.held} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("heartbeat: register metrics: %w", err)
			}
		}
	}
	return r, nil
}

// Set makes key hold value on the lease. It returns at once; Run writes it.
func (r *Registrar) Set(key string, value []byte) {
	r.mu.Lock()
	if old, ok := r.desired[key]; ok && bytes.Equal(old, value) {
		r.mu.Unlock()
		return
	}
	r.desired[key] = slices.Clone(value)
	r.mu.Unlock()
	r.poke()
}

// Delete removes key. It returns at once; Run deletes it.
func (r *Registrar) Delete(key string) {
	r.mu.Lock()
	if _, ok := r.desired[key]; !ok {
		r.mu.Unlock()
		return
	}
	delete(r.desired, key)
	r.mu.Unlock()
	r.poke()
}

func (r *Registrar) poke() {
	select {
	case r.dirty <- struct{}{}:
	default:
	}
}

// Lease is the current lease, or 0 while none is held with every key
// written, or while it is not proved alive (Alive). Readiness checks use it.
func (r *Registrar) Lease() clientv3.LeaseID {
	if !r.Alive() {
		return 0
	}
	return clientv3.LeaseID(r.lease.Load())
}

// AliveUntil is the time until which the current lease is proved alive on
// the etcd server: the time a keepalive (or the grant) that etcd answered
// was sent, plus the TTL etcd answered with, minus a margin of a quarter
// TTL for the clocks and for what the holder still does after asking. The
// server cannot expire the lease before then, so the coordinator cannot
// give this holder's work away before then either. Zero while none is held.
func (r *Registrar) AliveUntil() time.Time {
	n := r.aliveUntil.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Alive reports whether the lease is proved alive now.
func (r *Registrar) Alive() bool { return time.Now().UnixNano() < r.aliveUntil.Load() }

// Proofs is poked (capacity 1) whenever AliveUntil moves or the lease
// changes: a holder that must stop when the proof runs out waits on it and
// on a timer at AliveUntil.
func (r *Registrar) Proofs() <-chan struct{} { return r.proofs }

// Err is the last error talking to etcd, nil once a lease is held again.
// It names the endpoints, for readiness.
func (r *Registrar) Err() error {
	if e := r.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

func (r *Registrar) setErr(err error) {
	if err == nil {
		r.lastErr.Store(nil)
		return
	}
	err = fmt.Errorf("etcd %v: %w", r.cfg.Client.Endpoints(), err)
	r.lastErr.Store(&err)
}

func (r *Registrar) prove(until time.Time) {
	r.aliveUntil.Store(until.UnixNano())
	select {
	case r.proofs <- struct{}{}:
	default:
	}
}

// margin is what is taken off the TTL in AliveUntil, and how often a
// keepalive is sent: a quarter TTL each, so two keepalives in a row can
// fail before the proof runs out.
func (r *Registrar) margin() time.Duration { return r.ttl() / 4 }

func (r *Registrar) ttl() time.Duration {
	return time.Duration(math.Ceil(r.cfg.TTL.Seconds())) * time.Second
}

// Run grants a lease, keeps it alive, and keeps the desired keys written on
// it. When the lease is lost it grants a new one, with backoff, and writes
// every key again. When ctx is done it revokes the lease, which deletes the
// keys at once, and returns nil. No call to etcd waits longer than a TTL,
// so an unreachable etcd is logged (with its endpoints) and never holds up
// the return once ctx is done.
func (r *Registrar) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	for {
		lease, err := r.grant(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.setErr(err)
			r.log.Warn("cannot grant an etcd lease; retrying", "endpoints", r.cfg.Client.Endpoints(), "err", err, "backoff", backoff)
			if !ctxwait.Sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			continue
		}
		backoff = r.cfg.MinBackoff
		r.grants.Inc()
		r.log.Info("lease granted", "lease", fmt.Sprintf("%x", lease), "ttl", r.ttl())
		stopped := r.hold(ctx, lease)
		r.lease.Store(0)
		r.held.Set(0)
		r.prove(time.Time{})
		if stopped {
			rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := r.cfg.Client.Revoke(rctx, lease)
			cancel()
			if err != nil {
				r.log.Warn("revoke lease on stop failed; keys expire with the TTL", "err", err)
			} else {
				r.log.Info("lease revoked")
			}
			return nil
		}
		r.losses.Inc()
		// When many holders lose their leases at once (etcd overloaded, a
		// split healed), all granting and rewriting at the same moment
		// would overload it again: spread the new grants over up to a TTL.
		wait := rand.N(min(r.ttl(), r.cfg.MaxBackoff))
		r.log.Warn("lease lost; granting a new one and writing every key again", "lease", fmt.Sprintf("%x", lease), "after", wait)
		if !ctxwait.Sleep(ctx, wait) {
			return nil
		}
	}
}

// grant asks for a lease, for at most a TTL, and proves it alive from the
// time it asked.
func (r *Registrar) grant(ctx context.Context) (clientv3.LeaseID, error) {
	gctx, cancel := context.WithTimeout(ctx, r.ttl())
	defer cancel()
	asked := time.Now()
	resp, err := r.cfg.Client.Grant(gctx, int64(r.ttl()/time.Second))
	if err != nil {
		return 0, err
	}
	r.prove(asked.Add(time.Duration(resp.TTL)*time.Second - r.margin()))
	return resp.ID, nil
}

// keepAlive renews lease every margin, each renewal bounded by half a TTL,
// and moves AliveUntil after each one etcd answered. It returns when ctx is
// done or the lease is surely gone: etcd says so, or no renewal was
// answered for a whole TTL after the last proof (the server may have
// expired it by then; a new lease is cheaper than the doubt).
func (r *Registrar) keepAlive(ctx context.Context, lease clientv3.LeaseID) {
	tick := time.NewTicker(r.margin())
	defer tick.Stop()
	lastAsked := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// A slow answer still proves the lease from the time it was asked:
		// give it half a TTL rather than cut it at the next tick.
		asked := time.Now()
		kctx, cancel := context.WithTimeout(ctx, r.ttl()/2)
		resp, err := r.cfg.Client.KeepAliveOnce(kctx, lease)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
			r.log.Warn("etcd says the lease is gone", "lease", fmt.Sprintf("%x", lease))
			return
		case err != nil:
			r.setErr(err)
			r.log.Warn("lease keepalive failed", "endpoints", r.cfg.Client.Endpoints(), "err", err,
				"alive_until", r.AliveUntil().Format(time.RFC3339Nano))
			if time.Since(lastAsked) > r.ttl() {
				return
			}
		default:
			lastAsked = asked
			r.prove(asked.Add(time.Duration(resp.TTL)*time.Second - r.margin()))
		}
	}
}

// hold keeps the desired keys written on lease until ctx is done (true) or
// the lease is lost (false).
func (r *Registrar) hold(ctx context.Context, lease clientv3.LeaseID) (stopped bool) {
	kctx, kcancel := context.WithCancel(ctx)
	lost := make(chan struct{})
	go func() {
		defer close(lost)
		r.keepAlive(kctx, lease)
	}()
	defer func() {
		kcancel()
		<-lost
	}()
	written := map[string][]byte{}
	backoff := r.cfg.MinBackoff
	var retry <-chan time.Time
	for {
		if err := r.sync(ctx, lease, written); err != nil {
			if ctx.Err() != nil {
				return true
			}
			r.writeErrs.Inc()
			r.setErr(err)
			r.log.Warn("write keys on lease failed; retrying", "err", err, "backoff", backoff)
			r.lease.Store(0)
			r.held.Set(0)
			retry = time.After(backoff)
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		} else {
			backoff = r.cfg.MinBackoff
			retry = nil
			r.setErr(nil)
			if r.lease.Swap(int64(lease)) != int64(lease) {
				r.prove(r.AliveUntil()) // the holder learns of the new lease
			}
			r.held.Set(1)
		}
		select {
		case <-ctx.Done():
			return true
		case <-lost:
			return ctx.Err() != nil
		case <-r.dirty:
		case <-retry:
		}
	}
}

// sync writes the difference between the desired keys and those written on
// this lease. Each write is bounded by a TTL.
func (r *Registrar) sync(ctx context.Context, lease clientv3.LeaseID, written map[string][]byte) error {
	r.mu.Lock()
	desired := maps.Clone(r.desired)
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, r.ttl())
	defer cancel()
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(desired)) {
		v := desired[k]
		if old, ok := written[k]; ok && bytes.Equal(old, v) {
			continue
		}
		if _, err := r.cfg.Client.Put(ctx, k, string(v), clientv3.WithLease(lease)); err != nil {
			errs = append(errs, fmt.Errorf("put %s: %w", k, err))
			continue
		}
		written[k] = v
	}
	for _, k := range slices.Sorted(maps.Keys(written)) {
		if _, ok := desired[k]; ok {
			continue
		}
		if _, err := r.cfg.Client.Delete(ctx, k); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", k, err))
			continue
		}
		delete(written, k)
	}
	return errors.Join(errs...)
}
