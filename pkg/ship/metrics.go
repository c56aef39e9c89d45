package ship

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records     *prometheus.CounterVec // topic
	bytes       *prometheus.CounterVec // topic
	rejected    *prometheus.CounterVec // reason
	fenced      prometheus.Counter
	writeErrors *prometheus.CounterVec // reason
	retries     *prometheus.CounterVec // reason
	batch       prometheus.Histogram
	latency     prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, s *Shipper) (*metrics, error) {
	const ns, sub = "logferry", "ship"
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "records_total",
			Help: "Records Kafka acknowledged, by Kafka topic.",
		}, []string{"topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bytes_total",
			Help: "Bytes of key, value and headers of the records Kafka acknowledged, by Kafka topic.",
		}, []string{"topic"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "rejected_records_total",
			Help: "Records that could not be written and were acked with an error (not retried), by reason.",
		}, []string{"reason"}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "fenced_records_total",
			Help: "Records dropped unwritten because the gate was closed (the agent could not prove its etcd lease alive); they are read again.",
		}),
		writeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "write_errors_total",
			Help: "Records a write attempt failed for, retried or rejected, by reason.",
		}, []string{"reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "retries_total",
			Help: "Records written again after a failed attempt, by the reason of the failure.",
		}, []string{"reason"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "batch_records",
			Help:    "Records per write to Kafka.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 .. 65536
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "write_duration_seconds",
			Help:    "Duration of one write to Kafka, until every partition it touched answered.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 15), // 0.5ms .. 8s
		}),
	}
	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{
		m.records, m.bytes, m.rejected, m.fenced, m.writeErrors, m.retries, m.batch, m.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "inflight_bytes",
			Help: "Bytes of records accepted and not yet acked (what --max-inflight-bytes bounds).",
		}, func() float64 { return float64(s.inflight.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "inflight_records",
			Help: "Records accepted and not yet acked.",
		}, func() float64 { return float64(s.inflightRecs.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "inflight_bytes_limit",
			Help: "The --max-inflight-bytes bound; senders block when inflight_bytes reaches it.",
		}, func() float64 { return float64(s.cfg.MaxInflightBytes) }),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ship: register metrics: %w", err)
		}
	}
	return m, nil
}
