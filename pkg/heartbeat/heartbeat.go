package heartbeat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

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

	lease atomic.Int64 // current lease id, 0 while none is held

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
// written. Readiness checks use it.
func (r *Registrar) Lease() clientv3.LeaseID { return clientv3.LeaseID(r.lease.Load()) }

// Run grants a lease, keeps it alive, and keeps the desired keys written on
// it. When the lease is lost it grants a new one, with backoff, and writes
// every key again. When ctx is done it revokes the lease, which deletes the
// keys at once, and returns nil.
func (r *Registrar) Run(ctx context.Context) error {
	backoff := r.cfg.MinBackoff
	ttl := int(math.Ceil(r.cfg.TTL.Seconds()))
	for {
		// The session gets its own context: Close and Revoke must still
		// work after ctx is done.
		sctx, scancel := context.WithCancel(context.Background())
		sess, err := concurrency.NewSession(r.cfg.Client, concurrency.WithTTL(ttl), concurrency.WithContext(sctx))
		if err != nil {
			scancel()
			if ctx.Err() != nil {
				return nil
			}
			r.log.Warn("grant lease failed; retrying", "err", err, "backoff", backoff)
			if !ctxwait.Sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			continue
		}
		backoff = r.cfg.MinBackoff
		r.grants.Inc()
		r.log.Info("lease granted", "lease", fmt.Sprintf("%x", sess.Lease()), "ttl_s", ttl)
		stopped := r.hold(ctx, sess)
		r.lease.Store(0)
		r.held.Set(0)
		if stopped {
			rctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_, err := r.cfg.Client.Revoke(rctx, sess.Lease())
			cancel()
			scancel()
			if err != nil {
				r.log.Warn("revoke lease on stop failed; keys expire with the TTL", "err", err)
			} else {
				r.log.Info("lease revoked")
			}
			return nil
		}
		scancel()
		r.losses.Inc()
		r.log.Warn("lease lost; granting a new one and writing every key again", "lease", fmt.Sprintf("%x", sess.Lease()))
	}
}

// hold keeps the desired keys written on sess until ctx is done (true) or
// the session ends (false).
func (r *Registrar) hold(ctx context.Context, sess *concurrency.Session) (stopped bool) {
	written := map[string][]byte{}
	backoff := r.cfg.MinBackoff
	var retry <-chan time.Time
	for {
		if err := r.sync(ctx, sess, written); err != nil {
			if ctx.Err() != nil {
				return true
			}
			r.writeErrs.Inc()
			r.log.Warn("write keys on lease failed; retrying", "err", err, "backoff", backoff)
			r.lease.Store(0)
			r.held.Set(0)
			retry = time.After(backoff)
			backoff = min(2*backoff, r.cfg.MaxBackoff)
		} else {
			backoff = r.cfg.MinBackoff
			retry = nil
			r.lease.Store(int64(sess.Lease()))
			r.held.Set(1)
		}
		select {
		case <-ctx.Done():
			return true
		case <-sess.Done():
			return false
		case <-r.dirty:
		case <-retry:
		}
	}
}

// sync writes the difference between the desired keys and those written on
// this session.
func (r *Registrar) sync(ctx context.Context, sess *concurrency.Session, written map[string][]byte) error {
	r.mu.Lock()
	desired := maps.Clone(r.desired)
	r.mu.Unlock()
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(desired)) {
		v := desired[k]
		if old, ok := written[k]; ok && bytes.Equal(old, v) {
			continue
		}
		if _, err := r.cfg.Client.Put(ctx, k, string(v), clientv3.WithLease(sess.Lease())); err != nil {
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
