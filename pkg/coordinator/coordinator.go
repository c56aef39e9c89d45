package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/logferry/logferry/pkg/assign"
	"github.com/logferry/logferry/pkg/coordinator/election"
	"github.com/logferry/logferry/pkg/coordinator/plan"
	"github.com/logferry/logferry/pkg/keyspace"
)

// Defaults of Config's zero durations (the command-line defaults).
const (
	DefaultLeaseTTL          = 5 * time.Second
	DefaultHandoverTimeout   = 30 * time.Second
	DefaultReconcileInterval = 200 * time.Millisecond
	DefaultStatusInterval    = 10 * time.Second
	// DefaultCompactInterval is how often the leader compacts etcd's
	// history, to the revision it saw one interval earlier (as
	// kube-apiserver does).
	DefaultCompactInterval = 5 * time.Minute
	// DefaultOwnerGoneRate bounds, in files per second, how fast the
	// assignments of agents whose heartbeat vanished are torn down (see
	// plan.Options.OwnerGoneRate): one agent's files go at once, a mass
	// lease loss is spread out.
	DefaultOwnerGoneRate = 1000
	// maxGroupsPerPass bounds the files one reconcile pass changes (see
	// plan.Options.MaxGroups): about 40 MB of planned operations and 400
	// Txns. A cold start of a million files takes twenty passes instead
	// of one, and never holds the whole million's operations at once.
	maxGroupsPerPass = 50_000
	// txnTimeout bounds one leader Txn: a leader that cannot write for
	// this long is better off noticing it and re-listing.
	txnTimeout = 5 * time.Second
)

// ErrConfig is wrapped by New's validation errors.
var ErrConfig = errors.New("coordinator: invalid config")

// Config configures a Coordinator.
type Config struct {
	Client *clientv3.Client
	Space  keyspace.Space
	// ID names this coordinator: its election value and the Leader field
	// of what it writes.
	ID string
	// Version is the build version reported in /status/coordinator.
	Version string
	// LeaseTTL is the election session's TTL (whole seconds, at least 1 s).
	LeaseTTL time.Duration
	// HandoverTimeout is how long a revoked assignment may wait for its
	// release before the leader deletes it itself.
	HandoverTimeout time.Duration
	// ReconcileInterval is the least time between two reconcile passes:
	// events arriving meanwhile are coalesced into the next pass.
	ReconcileInterval time.Duration
	// ResyncInterval is how often the follower re-lists everything from
	// scratch (leader and standby; the leader then reconciles); 0 (the
	// default) never. The watches deliver
	// every change in order and re-list by themselves whenever they break
	// (compaction, a lost stream), so a periodic re-list repairs nothing
	// they miss, while at a million keys it is a thousand requests and a
	// rebuilt state each time.
	ResyncInterval time.Duration
	// CompactInterval is how often the leader compacts etcd's history to
	// the revision it saw one interval before: 0 means
	// DefaultCompactInterval, a negative value never.
	CompactInterval time.Duration
	// OwnerGoneRate bounds how fast the assignments of agents whose
	// heartbeat is gone are deleted and handed on, in files per second: 0
	// means DefaultOwnerGoneRate, a negative value no bound.
	OwnerGoneRate float64
	// CheckpointRetention is how long a file must have been gone before
	// the leader deletes its checkpoint (retention.go): 0 means
	// DefaultCheckpointRetention, a negative value never.
	CheckpointRetention time.Duration
	// CheckpointDeleteRate bounds those deletions, in keys per second: 0
	// means DefaultCheckpointDeleteRate.
	CheckpointDeleteRate float64
	// OwnerGoneGrace is how long an agent's heartbeat may be gone before
	// its assignments are touched at all (plan.Options.OwnerGoneGrace);
	// 0, the default, none.
	OwnerGoneGrace time.Duration
	// StatusInterval is how often /status/coordinator is rewritten when
	// only its timestamps changed.
	StatusInterval time.Duration
	// Assign configures pkg/assign. Every coordinator of a cluster must use
	// the same (the zero value, in production).
	Assign assign.Config
	// ElectionBackoff bounds the pause between failed election rounds
	// (default 100 ms .. 5 s).
	ElectionMinBackoff, ElectionMaxBackoff time.Duration
	Logger                                 *slog.Logger
	Registerer                             prometheus.Registerer
}

// Coordinator is one member of the coordinator HA group. Construct with
// New, drive with Run.
type Coordinator struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	rm      *retentionMetrics
	elector *election.Elector
	// planner outlives terms: its consistent rings are expensive, and a
	// standby keeps them in step with the members (see follower.go).
	planner *plan.Planner
	rings   *ringKeeper
	// follow outlives terms: its State is what a term plans from.
	follow   *follower
	standby  standbyControl
	versions versionCheck
}

// New validates cfg, fills in defaults and registers the metrics. It starts
// nothing.
func New(cfg Config) (*Coordinator, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("%w: no etcd client", ErrConfig)
	}
	if cfg.ID == "" {
		return nil, fmt.Errorf("%w: empty id", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		return nil, fmt.Errorf("%w: no prometheus registerer", ErrConfig)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"lease TTL", &cfg.LeaseTTL, DefaultLeaseTTL},
		{"handover timeout", &cfg.HandoverTimeout, DefaultHandoverTimeout},
		{"reconcile interval", &cfg.ReconcileInterval, DefaultReconcileInterval},
		{"resync interval", &cfg.ResyncInterval, 0},
		{"status interval", &cfg.StatusInterval, DefaultStatusInterval},
		{"owner-gone grace", &cfg.OwnerGoneGrace, 0},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("%w: %s %v is negative", ErrConfig, d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.CompactInterval == 0 {
		cfg.CompactInterval = DefaultCompactInterval
	}
	if cfg.OwnerGoneRate == 0 {
		cfg.OwnerGoneRate = DefaultOwnerGoneRate
	}
	if cfg.CheckpointRetention == 0 {
		cfg.CheckpointRetention = DefaultCheckpointRetention
	}
	if cfg.CheckpointDeleteRate == 0 {
		cfg.CheckpointDeleteRate = DefaultCheckpointDeleteRate
	}
	if cfg.CheckpointDeleteRate < 0 {
		return nil, fmt.Errorf("%w: checkpoint delete rate %v is negative", ErrConfig, cfg.CheckpointDeleteRate)
	}
	if cfg.LeaseTTL < time.Second {
		return nil, fmt.Errorf("%w: lease TTL %v: etcd leases need at least 1s", ErrConfig, cfg.LeaseTTL)
	}
	if cfg.HandoverTimeout <= cfg.ReconcileInterval {
		return nil, fmt.Errorf("%w: handover timeout %v must exceed the reconcile interval %v", ErrConfig, cfg.HandoverTimeout, cfg.ReconcileInterval)
	}
	p, err := plan.NewPlanner(cfg.Space, plan.Options{Leader: cfg.ID, HandoverTimeout: cfg.HandoverTimeout, Assign: cfg.Assign,
		AsyncRings: true, OwnerGoneRate: max(cfg.OwnerGoneRate, 0), OwnerGoneGrace: cfg.OwnerGoneGrace, MaxGroups: maxGroupsPerPass})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	log := cfg.Logger.With("component", "coordinator", "id", cfg.ID)
	el, err := election.New(election.Config{
		Client: cfg.Client, Prefix: cfg.Space.ElectionPrefix(), ID: cfg.ID, TTL: cfg.LeaseTTL,
		MinBackoff: cfg.ElectionMinBackoff, MaxBackoff: cfg.ElectionMaxBackoff,
		Logger: cfg.Logger.With("id", cfg.ID),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register coordinator metrics: %w", err)
	}
	rm, err := newRetentionMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register coordinator metrics: %w", err)
	}
	c := &Coordinator{cfg: cfg, log: log, m: m, rm: rm, elector: el, planner: p, rings: newRingKeeper(log, m)}
	c.follow = newFollower(c)
	return c, nil
}

// Run follows /topics/, /assign/ and /offsets/ for as long as it runs, and
// campaigns for leadership; while leader, it reconciles assignments from
// what it follows, while standby it keeps that current and the consistent
// rings warm. It returns nil when ctx is done, after resigning (so a
// standby takes over at once) and revoking its lease.
func (c *Coordinator) Run(ctx context.Context) error {
	c.log.Info("starting", "lease_ttl", c.cfg.LeaseTTL, "handover_timeout", c.cfg.HandoverTimeout,
		"reconcile_interval", c.cfg.ReconcileInterval, "resync_interval", c.cfg.ResyncInterval,
		"compact_interval", c.cfg.CompactInterval, "owner_gone_rate", c.cfg.OwnerGoneRate, "owner_gone_grace", c.cfg.OwnerGoneGrace,
		"checkpoint_retention", c.cfg.CheckpointRetention, "checkpoint_delete_rate", c.cfg.CheckpointDeleteRate,
		"election_prefix", c.cfg.Space.ElectionPrefix())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.rings.run(gctx) })
	g.Go(func() error { return c.follow.run(gctx) })
	g.Go(func() error { return c.standbyLoop(gctx) })
	g.Go(func() error { return c.elector.Run(gctx, c.lead) })
	err := g.Wait()
	c.log.Info("stopped")
	return err
}

// IsLeader reports whether a leader term is running in this coordinator.
func (c *Coordinator) IsLeader() bool { return c.elector.Role() == election.RoleLeader }

// Leader is the id of the current leader as last observed ("" if unknown).
func (c *Coordinator) Leader() string { return c.elector.Leader() }

// Ready is the readiness check: nil for the leader and for a standby that
// holds a session and campaigns; an error while there is no session
// (starting, or etcd unreachable).
func (c *Coordinator) Ready() error {
	switch r := c.elector.Role(); r {
	case election.RoleLeader, election.RoleStandby:
		return nil
	default:
		return fmt.Errorf("coordinator %s holds no etcd session (role %v)", c.cfg.ID, r)
	}
}

// lead is one leadership term. The standby loop stops for the term, which
// holds the follower's State meanwhile, and runs again after it: a
// deposed leader stands by with the State it led from.
func (c *Coordinator) lead(ctx context.Context, l election.Leadership) error {
	c.pauseStandby()
	defer c.resumeStandby()
	c.m.leader.Set(1)
	c.m.terms.Inc()
	defer func() {
		c.m.leader.Set(0)
		c.m.pending.Set(0)
		c.m.invalidTopics.Set(0)
		c.m.junkKeys.Set(0)
		c.rm.reset()
	}()
	return newTerm(c, l).run(ctx)
}
