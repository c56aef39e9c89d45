package agent

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/logferry/logferry/pkg/tailer"
)

type metrics struct {
	linesRead       *prometheus.CounterVec // topic
	bytesRead       *prometheus.CounterVec // topic
	linesShipped    *prometheus.CounterVec // topic
	bytesShipped    *prometheus.CounterVec // topic
	rejected        *prometheus.CounterVec // topic
	flagged         *prometheus.CounterVec // topic, flag
	bytesBehind     *prometheus.GaugeVec   // topic, file
	lostBytes       *prometheus.CounterVec // topic
	checkpointDur   prometheus.Histogram
	checkpointErr   *prometheus.CounterVec // reason
	fencedOut       prometheus.Counter
	selfFences      prometheus.Counter
	releases        *prometheus.CounterVec // result
	copiesContinued prometheus.Counter
	tailers         prometheus.Gauge
	parked          prometheus.Gauge
	queued          prometheus.Gauge
	reconciles      *prometheus.CounterVec // scope
	wakes           *prometheus.CounterVec // by
	filesHeld       prometheus.Gauge
	watchedDirs     prometheus.Gauge
	topicsRefused   prometheus.Gauge
	filesSeen       *prometheus.GaugeVec // topic
	scans           prometheus.Histogram
	etcdCheckpoints prometheus.Counter
	etcdInterval    prometheus.Gauge
	localSaveDur    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		linesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_lines_read_total", Help: "Lines (records) read from files, by topic directory.",
		}, []string{"topic"}),
		bytesRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_bytes_read_total", Help: "Bytes of files consumed by the tailers, newlines included, by topic directory.",
		}, []string{"topic"}),
		linesShipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_lines_shipped_total", Help: "Records acknowledged by Kafka, by topic directory.",
		}, []string{"topic"}),
		bytesShipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_bytes_shipped_total", Help: "File bytes covered by records Kafka acknowledged, by topic directory.",
		}, []string{"topic"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_records_rejected_total", Help: "Records Kafka refused for good (too large, bad topic, not authorized); reported, not retried.",
		}, []string{"topic"}),
		flagged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_records_flagged_total", Help: "Records shipped with a flag header: split, truncated, no_newline, invalid_utf8.",
		}, []string{"topic", "flag"}),
		bytesBehind: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "logagent_file_bytes_behind", Help: "File size minus the acknowledged offset, per assigned file (topic, file key).",
		}, []string{"topic", "file"}),
		lostBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_lost_bytes_total", Help: "Bytes of files deleted or rewritten before they were shipped.",
		}, []string{"topic"}),
		checkpointDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "logagent_checkpoint_duration_seconds", Help: "Latency of one checkpoint Txn in etcd.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		checkpointErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_checkpoint_errors_total", Help: "Failed checkpoint writes, by reason (etcd, fenced).",
		}, []string{"reason"}),
		fencedOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logagent_files_fenced_out_total", Help: "Files stopped because their assignment guard failed (taken away).",
		}),
		selfFences: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logagent_self_fences_total",
			Help: "Times the agent stopped every file because it could not prove its etcd lease alive (no keepalive answered within the TTL minus a quarter).",
		}),
		scans: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "logagent_scan_duration_seconds",
			Help:    "Duration of one scan of every topic's globs (with the checks of rotated and deleted files); its count is the number of scans.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		etcdCheckpoints: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logagent_etcd_checkpoints_total",
			Help: "File offsets written to etcd (each one key); the fleet's sum is its checkpoint write rate.",
		}),
		etcdInterval: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_etcd_checkpoint_interval_seconds",
			Help: "The interval at which moved offsets go to etcd (sized to the fleet unless --etcd-checkpoint-interval is set).",
		}),
		localSaveDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "logagent_local_checkpoint_duration_seconds", Help: "Latency of one save of the local state file (write, fsync, rename).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		copiesContinued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "logagent_copies_continued_total",
			Help: "New files found to be copytruncate copies of a file being read, started at its acknowledged offset instead of 0.",
		}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_releases_total", Help: "Handover releases of files, by result (released, fenced, error).",
		}, []string{"result"}),
		tailers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_tailers", Help: "Files being tailed now.",
		}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_reconciles_total",
			Help: "Reconciles of the file runs, by scope: all (an input changed: assignments, topics, a scan that found something new, the lease) or runs (only the runs whose tailer ended or whose parked file was woken).",
		}, []string{"scope"}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_files_parked",
			Help: "Assigned files parked: quiet for --close-inactive, no tailer, woken by a write, rename or delete.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_files_queued",
			Help: "Assigned files waiting for their turn to be read: at most --max-starting-files are read to their end at once, and while any waits, a file read to its end parks at once.",
		}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "logagent_parked_wakes_total",
			Help: "Parked files woken, by what saw the change: watch (the directory watcher, within milliseconds) or scan (the fallback, every --scan-interval).",
		}, []string{"by"}),
		filesHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_files_held",
			Help: "Files the directory watcher found and holds open until their assignment arrives (or another agent's does).",
		}),
		watchedDirs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_watched_dirs", Help: "Directories the directory watcher watches for new files (inotify watches).",
		}),
		topicsRefused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "logagent_topics_refused", Help: "Topics refused on this host (invalid, or paths outside --allow-path).",
		}),
		filesSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "logagent_files_seen", Help: "Files this host reports for a topic directory.",
		}, []string{"topic"}),
	}
	if reg == nil {
		return m, nil
	}
	// The tailers' read buffers come from one pool of the process.
	readBuffers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "logagent_read_buffers",
		Help: "Read buffers (64 KiB each) the tailers hold now: one per file being read at this moment; a file waiting for more holds none.",
	}, func() float64 { return float64(tailer.ReadBuffersInUse()) })
	for _, c := range []prometheus.Collector{m.linesRead, m.bytesRead, m.linesShipped, m.bytesShipped, m.rejected,
		m.flagged, m.bytesBehind, m.lostBytes, m.checkpointDur, m.checkpointErr, m.fencedOut, m.selfFences, m.scans, m.etcdCheckpoints, m.etcdInterval, m.localSaveDur, m.releases, m.copiesContinued, m.tailers, m.parked, m.queued, m.wakes, m.reconciles,
		m.filesHeld, m.watchedDirs, m.topicsRefused, m.filesSeen, readBuffers} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent: register metrics: %w", err)
		}
	}
	return m, nil
}
