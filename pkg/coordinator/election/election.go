package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ErrLost is returned (wrapped) by a term whose fenced write found the
// leader key gone or replaced: leadership was lost.
var ErrLost = errors.New("election: leadership lost")

// requestTimeout bounds the election's own requests (grant, confirm), so an
// unreachable etcd shows up in the log as failed rounds, not as silence.
const requestTimeout = 10 * time.Second

// Errors of New.
var ErrConfig = errors.New("election: invalid config")

// Role is what this candidate currently is.
type Role int

// The roles.
const (
	RoleNone    Role = iota // no session: starting, or etcd unreachable
	RoleStandby             // session held, campaigning
	RoleLeader              // term running
)

func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleStandby:
		return "standby"
	case RoleLeader:
		return "leader"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Config configures an Elector.
type Config struct {
	Client *clientv3.Client
	// Prefix is the election prefix, ending in "/" (keyspace's ElectionPrefix).
	Prefix string
	// ID is this candidate's value, the coordinator's --id.
	ID string
	// TTL is the session lease's time to live, rounded up to whole seconds
	// (etcd leases have a resolution of one second).
	TTL time.Duration
	// Backoff between failed rounds (default 100 ms .. 5 s).
	MinBackoff, MaxBackoff time.Duration
	// StopTimeout bounds Resign and Revoke when a round ends (default 2 s),
	// so a stop never waits on an unreachable etcd for long.
	StopTimeout time.Duration
	Logger      *slog.Logger
}

// Leadership is one won term.
type Leadership struct {
	ID    string
	Key   string // the leader key, /coordinator/election/<lease hex>
	Rev   int64  // its create revision
	Lease clientv3.LeaseID
	Since time.Time
	// Confirmed is the revision at which the win was confirmed: every
	// write of an earlier leader (fenced by its own key, deleted before
	// this one could lead) is at or below it.
	Confirmed int64
}

// Guard is the comparison every leader write must carry: the leader key
// still exists with the create revision it had when this term began.
func (l Leadership) Guard() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(l.Key), "=", l.Rev)
}

// Elector campaigns and runs terms. Construct with New, drive with Run.
type Elector struct {
	cfg Config
	ttl int
	log *slog.Logger

	mu     sync.Mutex
	role   Role
	leader string // last observed leader id ("" if none seen)
}

// New validates cfg. It starts nothing.
func New(cfg Config) (*Elector, error) {
	switch {
	case cfg.Client == nil:
		return nil, fmt.Errorf("%w: no etcd client", ErrConfig)
	case cfg.Prefix == "" || !strings.HasSuffix(cfg.Prefix, "/"):
		return nil, fmt.Errorf("%w: prefix %q must end in \"/\"", ErrConfig, cfg.Prefix)
	case cfg.ID == "":
		return nil, fmt.Errorf("%w: empty id", ErrConfig)
	case cfg.TTL < time.Second:
		return nil, fmt.Errorf("%w: lease TTL %v: at least 1s", ErrConfig, cfg.TTL)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Elector{
		cfg: cfg,
		ttl: int(math.Ceil(cfg.TTL.Seconds())),
		log: cfg.Logger.With("component", "election"),
	}, nil
}

// Role is the current role.
func (e *Elector) Role() Role {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.role
}

// Leader is the id of the leader as last observed from etcd, or this
// candidate's own id while it leads. "" until a leader was seen.
func (e *Elector) Leader() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leader
}

func (e *Elector) setRole(r Role) {
	e.mu.Lock()
	e.role = r
	if r == RoleLeader {
		e.leader = e.cfg.ID
	}
	e.mu.Unlock()
}

func (e *Elector) setLeader(id string) {
	e.mu.Lock()
	changed := e.leader != id
	e.leader = id
	e.mu.Unlock()
	if changed && id != e.cfg.ID {
		e.log.Info("following leader", "leader", id)
	}
}

// Term is the leader's work. It must return promptly once ctx is done;
// returning ends the term (and resigns).
type Term func(ctx context.Context, l Leadership) error

// Run campaigns until ctx is done, running term each time it wins. A lost
// session, a lost term or a failed round starts a new round with a new
// session after a backoff. Run returns nil when ctx is done, after
// resigning and revoking its lease.
func (e *Elector) Run(ctx context.Context, term Term) error {
	backoff := e.cfg.MinBackoff
	for ctx.Err() == nil {
		led, err := e.round(ctx, term)
		e.setRole(RoleNone)
		switch {
		case ctx.Err() != nil:
			return nil
		case led && err == nil:
			// A term ended cleanly; a new campaign can start at once.
			backoff = e.cfg.MinBackoff
			continue
		case led:
			// A term failed (logged by round): pause before the next
			// campaign so a term that keeps failing does not spin.
			backoff = e.cfg.MinBackoff
		case err != nil:
			e.log.Warn("election round failed; retrying", "err", err, "backoff", backoff)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, e.cfg.MaxBackoff)
	}
	return nil
}

// round is one session: campaign, and if won, one term. It reports whether
// a term ran, and the round's or the term's error.
func (e *Elector) round(ctx context.Context, term Term) (bool, error) {
	cli := e.cfg.Client
	// Grant with ctx so that a stop interrupts it; the session itself gets
	// a context of its own so that Resign and Revoke still work after ctx
	// is done.
	gctx, gcancel := context.WithTimeout(ctx, requestTimeout)
	grant, err := cli.Grant(gctx, int64(e.ttl))
	gcancel()
	if err != nil {
		return false, fmt.Errorf("grant lease (ttl %ds): %w", e.ttl, err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	sess, err := concurrency.NewSession(cli, concurrency.WithLease(grant.ID), concurrency.WithTTL(e.ttl), concurrency.WithContext(sctx))
	if err != nil {
		e.revoke(grant.ID)
		return false, fmt.Errorf("keep lease %x alive: %w", grant.ID, err)
	}
	defer func() {
		sess.Orphan()
		e.revoke(sess.Lease())
	}()
	el := concurrency.NewElection(sess, strings.TrimSuffix(e.cfg.Prefix, "/"))
	e.setRole(RoleStandby)

	// Observe the leader while this round lasts, for logs and readiness.
	octx, ocancel := context.WithCancel(ctx)
	var owg sync.WaitGroup
	owg.Go(func() { e.observe(octx, el) })
	defer func() { ocancel(); owg.Wait() }()

	// Campaign, raced against the session: Campaign does not notice its
	// own session ending while it waits for older candidates to go.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	done := make(chan error, 1)
	go func() { done <- el.Campaign(cctx, e.cfg.ID) }()
	select {
	case err = <-done:
	case <-sess.Done():
		ccancel()
		<-done
		return false, fmt.Errorf("session %x ended while campaigning", sess.Lease())
	case <-ctx.Done():
		ccancel()
		<-done
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("campaign: %w", err)
	}
	l := Leadership{ID: e.cfg.ID, Key: el.Key(), Rev: el.Rev(), Lease: sess.Lease(), Since: time.Now()}
	// Confirm: the key Campaign reported must still be ours.
	tctx, tcancel := context.WithTimeout(ctx, requestTimeout)
	resp, err := cli.Txn(tctx).If(l.Guard()).Commit()
	tcancel()
	if err != nil {
		return false, fmt.Errorf("confirm leader key %s: %w", l.Key, err)
	}
	if !resp.Succeeded {
		return false, fmt.Errorf("campaign returned but leader key %s (create revision %d) is gone", l.Key, l.Rev)
	}
	l.Confirmed = resp.Header.Revision
	select {
	case <-sess.Done():
		return false, fmt.Errorf("session %x ended as the campaign was won", sess.Lease())
	default:
	}

	e.log.Info("elected leader", "key", l.Key, "revision", l.Rev)
	lctx, lcancel := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	lwg.Go(func() {
		select {
		case <-sess.Done():
			e.log.Warn("session ended: stopping leader work", "lease", fmt.Sprintf("%x", sess.Lease()))
			lcancel()
		case <-lctx.Done():
		}
	})
	// The session notices a revoked lease only at its next keepalive (a
	// third of the TTL later); the leader key's deletion is seen at once.
	lwg.Go(func() {
		if e.watchKey(lctx, l) {
			lcancel()
		}
	})
	e.setRole(RoleLeader)
	err = term(lctx, l)
	e.setRole(RoleNone)
	lcancel()
	lwg.Wait()
	switch {
	case ctx.Err() != nil:
		e.log.Info("stopping: resigning leadership", "key", l.Key)
	case errors.Is(err, ErrLost):
		e.log.Warn("leadership lost", "key", l.Key, "err", err)
	case err != nil:
		e.log.Warn("leader term failed; resigning", "key", l.Key, "err", err)
	default:
		e.log.Info("leader term ended", "key", l.Key)
	}
	// Resign only after the term returned: its work has stopped, so the
	// next leader never overlaps it.
	rctx, rcancel := context.WithTimeout(context.Background(), e.cfg.StopTimeout)
	if rerr := el.Resign(rctx); rerr != nil {
		e.log.Warn("resign failed; the key goes with the lease", "key", l.Key, "err", rerr)
	}
	rcancel()
	if ctx.Err() != nil {
		return true, nil
	}
	return true, err
}

func (e *Elector) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.StopTimeout)
	defer cancel()
	if _, err := e.cfg.Client.Revoke(ctx, id); err != nil {
		e.log.Debug("revoke lease failed; it expires with its TTL", "lease", fmt.Sprintf("%x", id), "err", err)
	}
}

// observe follows the election's leader value. Observe's channel closes on
// any watch disruption, so it is called again, with a pause.
func (e *Elector) observe(ctx context.Context, el *concurrency.Election) {
	for {
		for resp := range el.Observe(ctx) {
			if len(resp.Kvs) > 0 {
				e.setLeader(string(resp.Kvs[0].Value))
			}
		}
		t := time.NewTimer(e.cfg.MinBackoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// watchKey follows the leader key until ctx is done (false) or the key is
// deleted or replaced (true). A disrupted watch is checked with a Get and
// watched again.
func (e *Elector) watchKey(ctx context.Context, l Leadership) bool {
	cli := e.cfg.Client
	rev := l.Rev
	for ctx.Err() == nil {
		wch := cli.Watch(clientv3.WithRequireLeader(ctx), l.Key, clientv3.WithRev(rev+1))
		for resp := range wch {
			if resp.Canceled || resp.CompactRevision != 0 {
				break
			}
			for _, ev := range resp.Events {
				if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != l.Rev {
					e.log.Warn("leader key deleted: stopping leader work", "key", l.Key, "revision", ev.Kv.ModRevision)
					return true
				}
			}
			rev = max(rev, resp.Header.Revision)
		}
		if ctx.Err() != nil {
			return false
		}
		resp, err := cli.Get(ctx, l.Key)
		switch {
		case err != nil:
			// Unknown; the session and the write fences still hold.
		case len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.Rev:
			e.log.Warn("leader key gone: stopping leader work", "key", l.Key)
			return true
		default:
			rev = resp.Header.Revision
		}
		t := time.NewTimer(e.cfg.MinBackoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	return false
}
