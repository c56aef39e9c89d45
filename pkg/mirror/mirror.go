package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/ctxwait"
)

// KV is one key as the mirror holds it.
type KV struct {
	Key            string
	Value          []byte
	CreateRevision int64
	ModRevision    int64
	Lease          int64
}

// EventType says whether a key appeared or changed (Put) or went away.
type EventType int

// The event types.
const (
	Put EventType = iota + 1
	Delete
)

func (t EventType) String() string {
	switch t {
	case Put:
		return "put"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event is one change of one key. For Delete, KV holds the key and the
// last value the mirror had for it.
type Event struct {
	Type EventType
	KV   KV
}

// Batch is what the handler receives: the changes up to Revision.
type Batch struct {
	// Revision is the etcd revision the mirror reflects after this batch.
	Revision int64
	// Snapshot is set on the first batch: Events holds every key, as Puts.
	Snapshot bool
	// Resync is set when the batch comes from a re-list after a broken
	// watch: Events is the difference between what the mirror had and what
	// the re-list found.
	Resync bool
	Events []Event
}

// Option adjusts a Mirror.
type Option func(*Mirror)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Mirror) { m.log = l } }

// WithResyncHook is called every time the mirror re-lists after a broken
// watch, with the reason; for metrics.
func WithResyncHook(f func(reason string)) Option { return func(m *Mirror) { m.onResync = f } }

// WithBackoff bounds the wait between failed list attempts.
func WithBackoff(minWait, maxWait time.Duration) Option {
	return func(m *Mirror) { m.minBackoff, m.maxBackoff = minWait, maxWait }
}

// Mirror keeps an in-memory copy of one or more etcd prefixes. Construct it
// with New and drive it with Run.
type Mirror struct {
	cli        *clientv3.Client
	prefixes   []string
	log        *slog.Logger
	onResync   func(string)
	minBackoff time.Duration
	maxBackoff time.Duration

	// state is owned by Run's goroutine.
	state map[string]KV
	rev   int64
}

// ErrBadPrefix is returned by New for a prefix that does not end in "/".
var ErrBadPrefix = errors.New("mirror: prefix must be non-empty and end in \"/\"")

// New returns a mirror of the given prefixes. Every prefix must end in "/"
// (a prefix watch on "/topics/t1" would also match "/topics/t10"), and no
// prefix may contain another.
func New(cli *clientv3.Client, prefixes []string, opts ...Option) (*Mirror, error) {
	if len(prefixes) == 0 {
		return nil, fmt.Errorf("%w: no prefixes", ErrBadPrefix)
	}
	for i, p := range prefixes {
		if p == "" || !strings.HasSuffix(p, "/") {
			return nil, fmt.Errorf("%w: %q", ErrBadPrefix, p)
		}
		for j, q := range prefixes {
			if i != j && strings.HasPrefix(p, q) {
				return nil, fmt.Errorf("%w: %q lies inside %q", ErrBadPrefix, p, q)
			}
		}
	}
	m := &Mirror{
		cli:        cli,
		prefixes:   slices.Clone(prefixes),
		log:        slog.Default(),
		onResync:   func(string) {},
		minBackoff: 50 * time.Millisecond,
		maxBackoff: 5 * time.Second,
	}
	for _, o := range opts {
		o(m)
	}
	return m, nil
}

// Run lists the prefixes at one revision, hands the handler a snapshot, then
// watches from the next revision and hands it every change in order. A
// compacted revision, a cancelled watch or a closed channel make it re-list
// and hand over exactly the difference, so the handler neither misses nor
// sees twice any change. Run returns nil when ctx is done, or the handler's
// first error.
func (m *Mirror) Run(ctx context.Context, handle func(Batch) error) error {
	first := true
	backoff := m.minBackoff
	for {
		state, rev, err := m.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			m.log.Warn("list failed; retrying", "prefixes", m.prefixes, "err", err, "backoff", backoff)
			if !ctxwait.Sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, m.maxBackoff)
			continue
		}
		backoff = m.minBackoff
		batch := Batch{Revision: rev, Snapshot: first, Resync: !first}
		if first {
			batch.Events = make([]Event, 0, len(state))
			for _, kv := range state {
				batch.Events = append(batch.Events, Event{Type: Put, KV: kv})
			}
			sortEvents(batch.Events)
		} else {
			batch.Events = diff(m.state, state)
		}
		m.state, m.rev, first = state, rev, false
		if err := handle(batch); err != nil {
			return err
		}
		reason, err := m.watch(ctx, handle)
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		m.log.Info("watch broken; re-listing", "prefixes", m.prefixes, "reason", reason, "revision", m.rev)
		m.onResync(reason)
	}
}

// list reads every prefix in one Txn so the snapshot has one revision.
func (m *Mirror) list(ctx context.Context) (map[string]KV, int64, error) {
	ops := make([]clientv3.Op, len(m.prefixes))
	for i, p := range m.prefixes {
		ops[i] = clientv3.OpGet(p, clientv3.WithPrefix())
	}
	resp, err := m.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("list %v: %w", m.prefixes, err)
	}
	state := make(map[string]KV)
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			state[string(kv.Key)] = fromPB(kv)
		}
	}
	return state, resp.Header.Revision, nil
}

type watchMsg struct {
	resp   clientv3.WatchResponse
	closed bool
}

// watch follows every prefix from m.rev+1 until the watch breaks (returning
// why) or ctx is done.
func (m *Mirror) watch(ctx context.Context, handle func(Batch) error) (string, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	msgs := make(chan watchMsg)
	done := make(chan struct{})
	defer func() {
		cancel()
		// Wait for the forwarders so none outlives this call.
		for range m.prefixes {
			<-done
		}
	}()
	for _, p := range m.prefixes {
		wch := m.cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(m.rev+1))
		go func() {
			defer func() { done <- struct{}{} }()
			for resp := range wch {
				select {
				case msgs <- watchMsg{resp: resp}:
				case <-wctx.Done():
					return
				}
			}
			select {
			case msgs <- watchMsg{closed: true}:
			case <-wctx.Done():
			}
		}()
	}
	for {
		var msg watchMsg
		select {
		case <-ctx.Done():
			return "", nil
		case msg = <-msgs:
		}
		switch {
		case msg.closed:
			return "watch channel closed", nil
		case msg.resp.CompactRevision != 0:
			return fmt.Sprintf("revision %d compacted (compact revision %d)", m.rev+1, msg.resp.CompactRevision), nil
		case msg.resp.Canceled || msg.resp.Err() != nil:
			return fmt.Sprintf("watch cancelled: %v", msg.resp.Err()), nil
		case len(msg.resp.Events) == 0:
			continue // progress notification
		}
		batch := Batch{Revision: msg.resp.Header.Revision, Events: make([]Event, 0, len(msg.resp.Events))}
		for _, ev := range msg.resp.Events {
			kv := fromPB(ev.Kv)
			if ev.Type == mvccpb.DELETE {
				prev, ok := m.state[kv.Key]
				if !ok {
					continue // deleted a key we never had: nothing changed for us
				}
				delete(m.state, kv.Key)
				batch.Events = append(batch.Events, Event{Type: Delete, KV: prev})
				continue
			}
			m.state[kv.Key] = kv
			batch.Events = append(batch.Events, Event{Type: Put, KV: kv})
		}
		// Several prefixes' streams interleave; the mirror's revision is the
		// highest seen. Re-listing from there is still exact, since each
		// stream delivers in order and a re-list diff covers every prefix.
		m.rev = max(m.rev, batch.Revision)
		batch.Revision = m.rev
		if len(batch.Events) == 0 {
			continue
		}
		if err := handle(batch); err != nil {
			return "", err
		}
	}
}

// diff returns the events that turn old into cur, sorted by key.
func diff(old, cur map[string]KV) []Event {
	var evs []Event
	for k, kv := range cur {
		if o, ok := old[k]; !ok || o.ModRevision != kv.ModRevision || !bytes.Equal(o.Value, kv.Value) {
			evs = append(evs, Event{Type: Put, KV: kv})
		}
	}
	for k, kv := range old {
		if _, ok := cur[k]; !ok {
			evs = append(evs, Event{Type: Delete, KV: kv})
		}
	}
	sortEvents(evs)
	return evs
}

func sortEvents(evs []Event) {
	slices.SortFunc(evs, func(a, b Event) int { return strings.Compare(a.KV.Key, b.KV.Key) })
}

func fromPB(kv *mvccpb.KeyValue) KV {
	return KV{
		Key:            string(kv.Key),
		Value:          kv.Value,
		CreateRevision: kv.CreateRevision,
		ModRevision:    kv.ModRevision,
		Lease:          kv.Lease,
	}
}
