package mirror

import (
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
	// Partial is set (WithoutState only) on every batch of a snapshot but
	// the last: the consumer's copy is incomplete until the last arrives.
	Partial bool
	// Progress is set on a batch without events that answers a request
	// (WithProgressRequests): every change at or below Revision, under
	// every prefix, has been handed over before it.
	Progress bool
	Events   []Event
}

// Option adjusts a Mirror.
type Option func(*Mirror)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(m *Mirror) { m.log = l } }

// WithResyncHook is called every time the mirror re-lists after a broken
// watch, with the reason; for metrics.
func WithResyncHook(f func(reason string)) Option { return func(m *Mirror) { m.onResync = f } }

// WithPageSize sets how many keys one list request reads (default
// DefaultPageSize). Every page of one list is read at the revision of the
// first, so the list is still one consistent snapshot.
func WithPageSize(n int) Option { return func(m *Mirror) { m.pageSize = n } }

// WithoutValues makes the mirror hold no values: it keeps each key's
// revisions and lease only, which is all its re-list diff needs (a key's
// value cannot change without its ModRevision changing). Put events still
// carry the value as etcd sent it; Delete events carry none. For consumers
// that decode values into their own compact form.
func WithoutValues() Option { return func(m *Mirror) { m.noValues = true } }

// WithoutState makes the mirror keep nothing at all, for a consumer that
// keeps its own copy and can replace it wholesale: every list (the first,
// and every re-list after a broken watch) is handed over as a snapshot,
// page by page as it is read (Snapshot set on the first batch of a list,
// Partial on every batch but the last), and a Delete carries only the key,
// possibly of a key the consumer never saw. A list that must start over
// (its revision compacted) starts with a new Snapshot batch. Resync is
// never set. This bounds what a list holds at once to one page, where the
// default mode holds the whole list and the previous copy to diff them.
func WithoutState() Option { return func(m *Mirror) { m.stateless = true } }

// WithKeysOnly lists prefix without values (etcd's keys-only range), for a
// consumer that needs only which keys exist under it: Puts from a list then
// carry no value, watch events still do. prefix must be one of the
// mirrored prefixes. Implies nothing about the others.
func WithKeysOnly(prefix string) Option {
	return func(m *Mirror) { m.keysOnly = append(m.keysOnly, prefix) }
}

// WithKeep makes the mirror keep, and hand on, only the keys keep accepts:
// a consumer that needs a sliver of a prefix (the agent needs the topic
// configs of /topics/, not every agent's heartbeats) holds that sliver
// only. etcd still sends the rest; it is dropped as it arrives.
func WithKeep(keep func(key string) bool) Option { return func(m *Mirror) { m.keep = keep } }

// kept reports whether key is one the mirror keeps.
func (m *Mirror) kept(key string) bool { return m.keep == nil || m.keep(key) }

// WithProgressRequests makes every receive from ch a request for etcd's
// progress notification on the mirror's watches. Once the watch of each
// prefix has had one since the request, the handler gets a Batch with
// Progress set and no events: every change at or below its Revision has
// been handed over. This is how a consumer learns, without listing, that
// it has seen everything up to a revision it read elsewhere. etcd answers
// a request only while every watcher of the stream is in sync (else the
// client could infer progress from the events still to come), so the
// mirror asks again every progressRetry until it is answered. A request
// made while the mirror lists waits for its watch; the list itself, read
// after the request, already covers it.
func WithProgressRequests(ch <-chan struct{}) Option {
	return func(m *Mirror) { m.progressReq = ch }
}

// progressRetry is how often an unanswered progress request is repeated.
const progressRetry = 100 * time.Millisecond

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
	pageSize   int
	noValues   bool
	stateless  bool
	keysOnly   []string
	keep       func(key string) bool
	// progressReq is the consumer's request channel (nil: never asked).
	progressReq <-chan struct{}

	// state is owned by Run's goroutine.
	state map[string]entry
	rev   int64
}

// entry is what the mirror keeps of one key (the key is the map's).
type entry struct {
	value       []byte // nil with WithoutValues
	create, mod int64
	lease       int64
}

func (e entry) kv(key string) KV {
	return KV{Key: key, Value: e.value, CreateRevision: e.create, ModRevision: e.mod, Lease: e.lease}
}

// DefaultPageSize is how many keys one list request reads. At 1,000 keys a
// request stays in the milliseconds on etcd even with heartbeat values of
// tens of kilobytes, while a million keys still take only a thousand
// requests; one unpaginated range over a million keys took etcd 6-10 s, and
// everything else waited behind it.
const DefaultPageSize = 1000

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
		pageSize:   DefaultPageSize,
	}
	for _, o := range opts {
		o(m)
	}
	if m.pageSize < 1 {
		return nil, fmt.Errorf("mirror: page size %d: must be at least 1", m.pageSize)
	}
	for _, p := range m.keysOnly {
		if !slices.Contains(m.prefixes, p) {
			return nil, fmt.Errorf("%w: keys-only prefix %q is not mirrored", ErrBadPrefix, p)
		}
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
		var err error
		if m.stateless {
			m.rev, err = m.listPaged(ctx, handle)
		} else {
			err = m.listDiff(ctx, handle, first)
		}
		var herr handlerError
		switch {
		case errors.As(err, &herr):
			return herr.err
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			m.log.Warn("list failed; retrying", "prefixes", m.prefixes, "err", err, "backoff", backoff)
			if !ctxwait.Sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, m.maxBackoff)
			continue
		}
		backoff, first = m.minBackoff, false
		if done, err := m.watchAgain(ctx, handle); done || err != nil {
			return err
		}
	}
}

// listDiff lists and hands over the snapshot (first) or the difference
// from the copy kept.
func (m *Mirror) listDiff(ctx context.Context, handle func(Batch) error, first bool) error {
	state, rev, err := m.list(ctx)
	if err != nil {
		return err
	}
	batch := Batch{Revision: rev, Snapshot: first, Resync: !first}
	if first {
		batch.Events = make([]Event, 0, len(state))
		for k, e := range state {
			batch.Events = append(batch.Events, Event{Type: Put, KV: e.kv(k)})
		}
		sortEvents(batch.Events)
	} else {
		batch.Events = diff(m.state, state)
	}
	if m.noValues {
		for k, e := range state {
			e.value = nil
			state[k] = e
		}
	}
	m.state, m.rev = state, rev
	if err := handle(batch); err != nil {
		return handlerError{err}
	}
	return nil
}

// watchAgain watches until the watch breaks, then reports the re-list to
// come. done is set when Run must return (ctx done, or err).
func (m *Mirror) watchAgain(ctx context.Context, handle func(Batch) error) (done bool, err error) {
	reason, err := m.watch(ctx, handle)
	if err != nil {
		return true, err
	}
	if ctx.Err() != nil {
		return true, nil
	}
	m.log.Info("watch broken; re-listing", "prefixes", m.prefixes, "reason", reason, "revision", m.rev)
	m.onResync(reason)
	return false, nil
}

type watchMsg struct {
	resp   clientv3.WatchResponse
	closed bool
	prefix int // index in m.prefixes
}

// watch follows every prefix from m.rev+1 until the watch breaks (returning
// why) or ctx is done.
func (m *Mirror) watch(ctx context.Context, handle func(Batch) error) (string, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	if m.progressReq != nil {
		wctx = ownStream(wctx)
	}
	msgs := make(chan watchMsg)
	done := make(chan struct{})
	defer func() {
		cancel()
		// Wait for the forwarders so none outlives this call.
		for range m.prefixes {
			<-done
		}
	}()
	for i, p := range m.prefixes {
		wch := m.cli.Watch(wctx, p, clientv3.WithPrefix(), clientv3.WithRev(m.rev+1))
		go func() {
			defer func() { done <- struct{}{} }()
			for resp := range wch {
				select {
				case msgs <- watchMsg{resp: resp, prefix: i}:
				case <-wctx.Done():
					return
				}
			}
			select {
			case msgs <- watchMsg{closed: true, prefix: i}:
			case <-wctx.Done():
			}
		}()
	}
	prog := newProgress(m, wctx, m.rev)
	defer prog.stop()
	for {
		var msg watchMsg
		select {
		case <-ctx.Done():
			return "", nil
		case <-m.progressReq:
			if b, ok := prog.want(); ok {
				if err := handle(b); err != nil {
					return "", err
				}
			}
			continue
		case <-prog.retry():
			prog.ask()
			continue
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
			if b, ok := prog.notified(msg.prefix, msg.resp.Header.Revision); ok {
				if err := handle(b); err != nil {
					return "", err
				}
			}
			continue
		}
		batch := Batch{Revision: msg.resp.Header.Revision, Events: make([]Event, 0, len(msg.resp.Events))}
		for _, ev := range msg.resp.Events {
			if !m.kept(string(ev.Kv.Key)) {
				continue
			}
			kv := fromPB(ev.Kv)
			if m.stateless {
				t := Put
				if ev.Type == mvccpb.DELETE {
					t = Delete
					kv.Value = nil
				}
				batch.Events = append(batch.Events, Event{Type: t, KV: kv})
				continue
			}
			if ev.Type == mvccpb.DELETE {
				prev, ok := m.state[kv.Key]
				if !ok {
					continue // deleted a key we never had: nothing changed for us
				}
				delete(m.state, kv.Key)
				batch.Events = append(batch.Events, Event{Type: Delete, KV: prev.kv(kv.Key)})
				continue
			}
			e := entry{create: kv.CreateRevision, mod: kv.ModRevision, lease: kv.Lease}
			if !m.noValues {
				e.value = kv.Value
			}
			m.state[kv.Key] = e
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

// diff returns the events that turn old into cur, sorted by key. A key's
// value changes only with its ModRevision, so revisions decide (values may
// not be kept).
func diff(old, cur map[string]entry) []Event {
	var evs []Event
	for k, e := range cur {
		if o, ok := old[k]; !ok || o.mod != e.mod || o.create != e.create {
			evs = append(evs, Event{Type: Put, KV: e.kv(k)})
		}
	}
	for k, e := range old {
		if _, ok := cur[k]; !ok {
			evs = append(evs, Event{Type: Delete, KV: e.kv(k)})
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
