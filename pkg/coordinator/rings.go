package coordinator

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/logferry/logferry/pkg/assign"
	"github.com/logferry/logferry/pkg/coordinator/plan"
)

// ringKeeper brings the shared topics' consistent rings up to date off the
// reconciler's path: a cold ring of 10,000 members takes most of a minute
// in consistent v1.0.0, a join storm of a thousand members about ten
// seconds, and neither may hold up local topics or the next pass. The
// planner computes with the rings as they stand meanwhile
// (plan.Options.AsyncRings) and asks for the ones that lag; the keeper
// syncs the latest member set asked for per topic, one topic at a time.
// It serves the leader's terms and the standby alike, for as long as Run.
type ringKeeper struct {
	log  *slog.Logger
	m    *metrics
	wake chan struct{} // capacity 1

	mu   sync.Mutex
	want map[string]plan.RingWork // topic -> latest request
}

func newRingKeeper(log *slog.Logger, m *metrics) *ringKeeper {
	return &ringKeeper{log: log.With("part", "rings"), m: m, wake: make(chan struct{}, 1), want: map[string]plan.RingWork{}}
}

// request queues ring work; a later request for a topic replaces an
// earlier one that has not started.
func (k *ringKeeper) request(work []plan.RingWork) {
	k.m.ringsLagging.Set(float64(len(work)))
	if len(work) == 0 {
		return
	}
	k.mu.Lock()
	for _, w := range work {
		k.want[w.Topic] = w
	}
	k.mu.Unlock()
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// observe records ring syncs made elsewhere (by Plan itself).
func (k *ringKeeper) observe(syncs []plan.RingSynced) {
	for _, s := range syncs {
		k.record(context.Background(), s.Topic, s.Members, s.Stats)
	}
}

func (k *ringKeeper) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-k.wake:
		}
		k.mu.Lock()
		want := k.want
		k.want = map[string]plan.RingWork{}
		k.mu.Unlock()
		for _, topic := range slices.Sorted(maps.Keys(want)) {
			w := want[topic]
			st, err := w.Assigner.Sync(ctx, w.Members)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				k.log.Warn("ring sync failed", "topic", topic, "members", len(w.Members), "err", err)
				continue
			}
			k.record(ctx, topic, len(w.Members), st)
		}
	}
}

func (k *ringKeeper) record(ctx context.Context, topic string, members int, st assign.SyncStats) {
	if st.Added+st.Removed == 0 {
		return
	}
	kind := "incremental"
	if st.Cold {
		kind = "cold"
	}
	k.m.ringSyncs.WithLabelValues(kind).Inc()
	k.m.ringSyncDuration.Observe(st.Took.Seconds())
	lvl := slog.LevelDebug
	if st.Cold || st.Took > time.Second {
		lvl = slog.LevelInfo
	}
	k.log.Log(ctx, lvl, "consistent ring synced", "topic", topic, "kind", kind, "members", members,
		"added", st.Added, "removed", st.Removed, "took", st.Took)
}
