package coordinator

import "github.com/prometheus/client_golang/prometheus"

// retentionMetrics are the checkpoint lifecycle's (retention.go).
type retentionMetrics struct {
	sweeps   prometheus.Counter
	deleted  prometheus.Counter
	pending  prometheus.Gauge
	held     *prometheus.GaugeVec
	refusals *prometheus.CounterVec
}

func newRetentionMetrics(reg prometheus.Registerer) (*retentionMetrics, error) {
	m := &retentionMetrics{
		sweeps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_checkpoint_sweeps_total",
			Help: "Sweeps of the checkpoint lifecycle: the leader looking for checkpoints of gone files (--checkpoint-retention).",
		}),
		deleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coordinator_checkpoints_deleted_total",
			Help: "Checkpoints deleted because their file was gone for --checkpoint-retention.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coordinator_checkpoints_pending_deletion",
			Help: "Checkpoints of gone files whose retention clock runs, at the last sweep (leader only).",
		}),
		held: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinator_checkpoints_held",
			Help: "Checkpoints that look gone but are kept, by reason: host_down (local topic, the writer has no heartbeat), no_members (shared topic without live members), unknown (a heartbeat or the checkpoint does not decode, or a heartbeat is truncated). Leader only.",
		}, []string{"reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_checkpoint_deletions_refused_total",
			Help: "Checkpoint deletions refused by their guard, by reason: rewritten (written again since it was read) or assigned (an assignment key exists).",
		}, []string{"reason"}),
	}
	for _, r := range heldReasons {
		m.held.WithLabelValues(r)
	}
	for _, r := range []string{refusedRewritten, refusedAssigned} {
		m.refusals.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.sweeps, m.deleted, m.pending, m.held, m.refusals} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// reset zeroes the gauges when a term ends: only a leader has them.
func (m *retentionMetrics) reset() {
	m.pending.Set(0)
	for _, r := range heldReasons {
		m.held.WithLabelValues(r).Set(0)
	}
}
