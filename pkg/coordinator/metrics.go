package coordinator

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logferry/logferry/pkg/coordinator/plan"
)

// Watch resync reasons (label values; bounded).
const (
	resyncCompacted = "compacted"   // the watch's start revision was compacted
	resyncClosed    = "closed"      // the watch channel closed (stream lost)
	resyncCancelled = "cancelled"   // the server cancelled the watch
	resyncPeriodic  = "periodic"    // --resync-interval
	resyncWrite     = "write_error" // a write's outcome is unknown
	// A new term could not be shown a current State without a list:
	resyncEtcdVersion = "etcd_version"     // etcd too old for exact progress notifications
	resyncNoProgress  = "progress_timeout" // no progress notification within progressTimeout
)

type metrics struct {
	leader            prometheus.Gauge
	terms             prometheus.Counter
	reconciles        prometheus.Counter
	reconcileDuration prometheus.Histogram
	moved             *prometheus.CounterVec
	assigned          prometheus.Counter
	resyncs           *prometheus.CounterVec
	stateLists        prometheus.Counter
	handoverTimeouts  prometheus.Counter
	conflicts         prometheus.Counter
	writeErrors       prometheus.Counter
	pending           prometheus.Gauge
	invalidTopics     prometheus.Gauge
	junkKeys          prometheus.Gauge
	ringSyncs         *prometheus.CounterVec
	ringSyncDuration  prometheus.Histogram
	ringsLagging      prometheus.Gauge
	goneDeferred      prometheus.Gauge
	goneInGrace       prometheus.Gauge
	capped            prometheus.Gauge
	goneDeferredTotal prometheus.Counter
	compactions       prometheus.Counter
	compactionErrors  prometheus.Counter
	compactedRevision prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_leader",
			Help: "1 while this coordinator is the leader, 0 otherwise.",
		}),
		terms: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_leader_terms_total",
			Help: "Leadership terms this coordinator started.",
		}),
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_reconciles_total",
			Help: "Reconcile passes (plan and write) run as leader.",
		}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coordinator_reconcile_duration_seconds",
			Help:    "Time of one reconcile pass: planning and writing the differences.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms .. ~16 s
		}),
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_files_moved_total",
			Help: "Files taken from their owner, by reason: revoked (rebalance, unreported, topic_removed, duplicate) or deleted (owner_gone, handover_timeout).",
		}, []string{"reason"}),
		assigned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_files_assigned_total",
			Help: "Assignment keys created (a file given to an agent).",
		}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_watch_resyncs_total",
			Help: "Re-lists of /topics/, /assign/ and /offsets/, leader or standby, by reason (compacted, closed, cancelled, periodic, write_error, etcd_version, progress_timeout).",
		}, []string{"reason"}),
		stateLists: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_state_lists_total",
			Help: "Complete lists of /topics/, /assign/ and /offsets/ applied to this coordinator's state: the first, then every re-list (see coordinator_watch_resyncs_total). A new leader term lists nothing unless a re-list is due.",
		}),
		handoverTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_handover_timeouts_total",
			Help: "Revoked assignments deleted by the leader because the owner did not release them within --handover-timeout.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_write_conflicts_total",
			Help: "File operations whose guard failed because etcd changed under the plan (retried from fresher state).",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_write_errors_total",
			Help: "Leader Txns that failed with an error (outcome unknown; the leader re-lists before planning again).",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_pending_handovers",
			Help: "Assignments marked revoking and not yet released (leader only).",
		}),
		invalidTopics: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_invalid_topics",
			Help: "Topics whose config does not decode or validate (leader only).",
		}),
		junkKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_junk_keys",
			Help: "Keys under /topics/, /assign/ and /offsets/ ignored because they do not parse or their value does not decode (leader only).",
		}),
		ringSyncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_ring_syncs_total",
			Help: "Consistent rings brought up to date with their topic's members, by kind: cold (built from scratch: the first time, or more than half the members changed) or incremental. Leader and standby alike.",
		}, []string{"kind"}),
		ringSyncDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coordinator_ring_sync_duration_seconds",
			Help:    "Time of one ring sync (off the reconcile path); cold syncs are quadratic in the members.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms .. ~4 min
		}),
		ringsLagging: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_rings_lagging",
			Help: "Shared topics whose consistent ring lagged their members at the last pass (files placed meanwhile go by the member walk).",
		}),
		capped: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_files_left_for_next_pass",
			Help: "Files needing a change that the last pass left for the next one, having planned as many as a pass may (leader only).",
		}),
		goneInGrace: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_owner_gone_in_grace",
			Help: "Assignments of agents whose heartbeat is gone for less than --owner-gone-grace, left untouched at the last pass (leader only).",
		}),
		goneDeferred: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_owner_gone_deferred",
			Help: "Assignments of agents whose heartbeat is gone, left in place at the last pass by --owner-gone-rate (leader only).",
		}),
		goneDeferredTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_owner_gone_deferred_total",
			Help: "Assignments whose deletion for owner_gone was deferred by --owner-gone-rate, counted once per agent and topic each time its heartbeat goes.",
		}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_compactions_total",
			Help: "etcd history compactions made by the leader (--compact-interval).",
		}),
		compactionErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_compaction_errors_total",
			Help: "etcd history compactions that failed (a revision already compacted is not an error).",
		}),
		compactedRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_compacted_revision",
			Help: "The revision this coordinator last compacted etcd's history to.",
		}),
	}
	m.ringSyncs.WithLabelValues("cold")
	m.ringSyncs.WithLabelValues("incremental")
	for _, r := range plan.Reasons {
		m.moved.WithLabelValues(r)
	}
	for _, r := range []string{resyncCompacted, resyncClosed, resyncCancelled, resyncPeriodic, resyncWrite, resyncEtcdVersion, resyncNoProgress} {
		m.resyncs.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.leader, m.terms, m.reconciles, m.reconcileDuration, m.moved, m.assigned,
		m.resyncs, m.stateLists, m.handoverTimeouts, m.conflicts, m.writeErrors, m.pending, m.invalidTopics, m.junkKeys,
		m.ringSyncs, m.ringSyncDuration, m.ringsLagging, m.goneDeferred, m.goneDeferredTotal, m.capped, m.goneInGrace,
		m.compactions, m.compactionErrors, m.compactedRevision} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// resyncReason maps pkg/mirror's free-text reason to a bounded label.
func resyncReason(s string) string {
	switch {
	case strings.Contains(s, "compacted"):
		return resyncCompacted
	case strings.Contains(s, "closed"):
		return resyncClosed
	default:
		return resyncCancelled
	}
}
