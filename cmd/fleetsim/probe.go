package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/procstat"
)

// sample is one look at etcd and the leader.
type sample struct {
	at     time.Time
	rev    int64   // etcd's revision: one per write Txn that changed something
	dbSize int64   // Maintenance Status DbSize (the backend file, history included)
	keys   float64 // cumulative keys put or deleted (etcd's own counters), -1 unknown
	leader string
	term   string // the leader's election key
	pid    int
	rss    int64 // leader VmRSS, bytes
	hwm    int64 // leader VmHWM, bytes
	// sbRSS and sbHWM are the largest VmRSS and VmHWM of the other
	// coordinators (the standby, which holds the same state).
	sbRSS, sbHWM int64
	cpu          time.Duration // leader utime+stime
	haveCPU      bool
}

// sampler records a sample every interval; scenarios read windows of them.
type sampler struct {
	cli      *clientv3.Client
	endpoint string
	co       *coords
	log      *slog.Logger
	http     *http.Client

	mu      sync.Mutex
	samples []sample
	noKeys  bool // the metrics endpoint gave no mvcc counters: stop asking
}

func newSampler(cli *clientv3.Client, endpoint string, co *coords, log *slog.Logger) *sampler {
	// No keep-alive: nothing idle is left behind between samples.
	return &sampler{cli: cli, endpoint: endpoint, co: co, log: log,
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
}

func (s *sampler) run(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		s.take(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// take records one sample now; parts that fail are left zero (and logged).
func (s *sampler) take(ctx context.Context) sample {
	sm := sample{at: time.Now(), keys: -1}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st, err := s.cli.Status(sctx, s.endpoint); err == nil {
		sm.rev, sm.dbSize = st.Header.Revision, st.DbSize
	} else if ctx.Err() == nil {
		s.log.Warn("etcd status", "endpoint", s.endpoint, "err", err)
	}
	sm.keys = s.writtenKeys(sctx)
	if id, term, err := s.co.leaderTerm(sctx); err == nil {
		sm.leader, sm.term = id, term
	} else {
		// etcd too busy to answer: the leader is the one last seen, so
		// that its CPU and memory are still followed under overload.
		s.mu.Lock()
		if n := len(s.samples); n > 0 {
			sm.leader, sm.term = s.samples[n-1].leader, s.samples[n-1].term
		}
		s.mu.Unlock()
	}
	if sm.leader != "" {
		sm.pid = s.co.pid(sm.leader)
	}
	if sm.pid != 0 {
		sm.rss, sm.hwm = procMem(sm.pid)
		if cpu, err := procstat.CPU(sm.pid); err == nil {
			sm.cpu, sm.haveCPU = cpu, true
		}
	}
	for _, id := range s.co.running() {
		if pid := s.co.pid(id); id != sm.leader && pid != 0 {
			rss, hwm := procMem(pid)
			sm.sbRSS, sm.sbHWM = max(sm.sbRSS, rss), max(sm.sbHWM, hwm)
		}
	}
	s.mu.Lock()
	s.samples = append(s.samples, sm)
	s.mu.Unlock()
	return sm
}

// mvccCounters are etcd's counts of keys put and deleted (etcd 3.5 and
// later; 3.4 calls them etcd_debugging_mvcc_*).
var mvccCounters = []string{"etcd_mvcc_put_total", "etcd_mvcc_delete_total",
	"etcd_debugging_mvcc_put_total", "etcd_debugging_mvcc_delete_total"}

// writtenKeys reads etcd's /metrics: keys put plus keys deleted so far, or
// -1 when the endpoint does not serve them (TLS, or metrics elsewhere).
func (s *sampler) writtenKeys(ctx context.Context) float64 {
	s.mu.Lock()
	no := s.noKeys
	s.mu.Unlock()
	if no {
		return -1
	}
	url := s.endpoint
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil && len(mfs) == 0 {
		return -1
	}
	sum, found := 0.0, false
	for _, name := range mvccCounters {
		if mf, ok := mfs[name]; ok {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			found = true
		}
	}
	if !found {
		s.mu.Lock()
		s.noKeys = true
		s.mu.Unlock()
		s.log.Warn("etcd /metrics has no mvcc put/delete counters; keys/s not reported", "url", url+"/metrics")
		return -1
	}
	return sum
}

// window is what the samples between two times say.
type window struct {
	secs                  float64
	keysPerSec            float64 // -1 unknown
	peakKeysPerSec        float64
	txnPerSec             float64 // write revisions per second
	peakTxnPerSec         float64
	revs                  int64
	dbStart, dbEnd        int64
	leaderRSS, leaderHW   int64 // the largest VmRSS and VmHWM of any leader seen
	standbyRSS, standbyHW int64 // the same of the other coordinators
	leaderCPU             float64
	leaders               []string // in the order they led
	terms                 int      // distinct leader terms seen
}

func (s *sampler) window(from, to time.Time) window {
	s.mu.Lock()
	var in []sample
	for _, sm := range s.samples {
		if !sm.at.Before(from) && !sm.at.After(to) {
			in = append(in, sm)
		}
	}
	s.mu.Unlock()
	w := window{keysPerSec: -1, leaderCPU: -1}
	if len(in) < 2 {
		return w
	}
	first, last := in[0], in[len(in)-1]
	w.secs = last.at.Sub(first.at).Seconds()
	w.revs = last.rev - first.rev
	w.txnPerSec = float64(w.revs) / w.secs
	w.dbStart, w.dbEnd = first.dbSize, last.dbSize
	if first.keys >= 0 && last.keys >= 0 {
		w.keysPerSec = (last.keys - first.keys) / w.secs
	}
	var cpu time.Duration
	var cpuSecs float64
	lastTerm := ""
	for i, sm := range in {
		if sm.term != "" && sm.term != lastTerm {
			w.terms++
			lastTerm = sm.term
		}
		w.leaderRSS, w.leaderHW = max(w.leaderRSS, sm.rss), max(w.leaderHW, sm.hwm)
		w.standbyRSS, w.standbyHW = max(w.standbyRSS, sm.sbRSS), max(w.standbyHW, sm.sbHWM)
		if sm.leader != "" && (len(w.leaders) == 0 || w.leaders[len(w.leaders)-1] != sm.leader) {
			w.leaders = append(w.leaders, sm.leader)
		}
		if i == 0 {
			continue
		}
		prev := in[i-1]
		dt := sm.at.Sub(prev.at).Seconds()
		if dt <= 0 {
			continue
		}
		w.peakTxnPerSec = max(w.peakTxnPerSec, float64(sm.rev-prev.rev)/dt)
		if sm.keys >= 0 && prev.keys >= 0 {
			w.peakKeysPerSec = max(w.peakKeysPerSec, (sm.keys-prev.keys)/dt)
		}
		// CPU only between two samples of the same leader process.
		if sm.haveCPU && prev.haveCPU && sm.pid == prev.pid {
			cpu += sm.cpu - prev.cpu
			cpuSecs += dt
		}
	}
	if cpuSecs > 0 {
		w.leaderCPU = 100 * cpu.Seconds() / cpuSecs
	}
	return w
}

func (w window) String() string {
	return fmt.Sprintf("%.0fs, %.0f keys/s, %.0f txn/s", w.secs, w.keysPerSec, w.txnPerSec)
}

// procMem is pid's resident set now (VmRSS) and at its peak (VmHWM), in
// bytes; zero if /proc cannot say (the process ended).
func procMem(pid int) (rss, hwm int64) {
	st, err := procstat.Status(pid, "VmRSS", "VmHWM")
	if err != nil {
		return 0, 0
	}
	return st["VmRSS"], st["VmHWM"]
}
