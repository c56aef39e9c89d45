package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
)

// fleet is every simulated agent, over a small pool of etcd clients (one
// connection per agent would be 10,000 connections to one etcd), and one
// mirror of /assign/ whose events are dispatched to the agents: a watch per
// agent would be 10,000 watches.
type fleet struct {
	o        *options
	ks       keyspace.Space
	log      *slog.Logger
	agentLog *slog.Logger // for the agents' Registrars
	clients  []*clientv3.Client
	reg      *prometheus.Registry // the agents' Registrar metrics, labelled by agent

	sharedTotal int // shared files in all
	sharedOn    bool

	mu     sync.Mutex
	agents []*simAgent
	byID   map[string]*simAgent
	// What /assign/ holds, as the dispatcher saw it.
	localKeys      int     // assignment keys of local files
	sharedKeys     []int16 // per shared file: its assignment keys
	sharedAssigned int     // shared files with at least one key
	revoking       int     // keys marked revoking now
	foreign        int     // keys of agents or files this fleet does not know
	creates        int64   // cumulative: keys created
	deletes        int64   // cumulative: keys deleted
	revokes        int64   // cumulative: keys turned revoking
	releases       struct{ ok, fenced, failed int64 }

	ctx      context.Context // run's: ends the dispatcher and the workers
	releaseQ chan releaseReq
	wg       sync.WaitGroup
}

type releaseReq struct {
	a   *simAgent
	r   fileRef
	rev int64
}

// releaseWorkers bound the releases in flight: a rebalance of 100,000
// files must not become 100,000 concurrent Txns.
const releaseWorkers = 64

func newFleet(o *options, ks keyspace.Space, clients []*clientv3.Client, log *slog.Logger) *fleet {
	spa := o.sharedPerAgent()
	total := max(1, (o.agents*spa+o.sharedReplicas-1)/o.sharedReplicas)
	// The Registrars log every lease granted and lost: thousands of lines
	// at this scale, which the counters already tell. Only at debug level.
	agentLog := slog.New(slog.DiscardHandler)
	if log.Enabled(context.Background(), slog.LevelDebug) {
		agentLog = log
	}
	return &fleet{o: o, ks: ks, log: log, agentLog: agentLog, clients: clients, reg: prometheus.NewRegistry(),
		sharedTotal: total, sharedKeys: make([]int16, total), byID: map[string]*simAgent{},
		releaseQ: make(chan releaseReq, 4096)}
}

// run starts the dispatcher and the release workers; they stop with ctx.
func (f *fleet) run(ctx context.Context) error {
	f.ctx = ctx
	m, err := mirror.New(f.clients[0], []string{f.ks.AssignPrefix()}, mirror.WithLogger(f.log))
	if err != nil {
		return err
	}
	f.wg.Add(1 + releaseWorkers)
	go func() {
		defer f.wg.Done()
		if err := m.Run(ctx, f.apply); err != nil && ctx.Err() == nil {
			f.log.Error("assignment watch ended", "err", err)
		}
	}()
	for range releaseWorkers {
		go func() {
			defer f.wg.Done()
			f.releaseLoop(ctx)
		}()
	}
	return nil
}

// addAgents starts n more agents, spread evenly over spread (0: at once),
// and returns them. With shared, they report their shared files too while
// the shared topic runs.
func (f *fleet) addAgents(ctx context.Context, n int, spread time.Duration, shared bool) ([]*simAgent, error) {
	f.mu.Lock()
	first := len(f.agents)
	f.mu.Unlock()
	spa := f.o.sharedPerAgent()
	var pace *time.Ticker
	if spread > 0 && n > 1 {
		pace = time.NewTicker(max(time.Microsecond, spread/time.Duration(n)))
		defer pace.Stop()
	}
	out := make([]*simAgent, 0, n)
	for i := first; i < first+n; i++ {
		a, err := newAgent(i, f.clients[i%len(f.clients)], f.o.leaseTTL, f.reg, f.agentLog)
		if err != nil {
			return out, err
		}
		for k := range spa {
			a.shared = append(a.shared, int32((i*spa+k)%f.sharedTotal))
		}
		f.mu.Lock()
		f.agents = append(f.agents, a)
		f.byID[a.id] = a
		sharedOn := f.sharedOn && shared
		f.mu.Unlock()
		a.serve(f.ks, f.o.files, sharedOn)
		a.run(ctx)
		out = append(out, a)
		if pace != nil {
			select {
			case <-ctx.Done():
				return out, ctx.Err()
			case <-pace.C:
			}
		}
	}
	return out, nil
}

// shareAll makes every agent report its shared files.
func (f *fleet) shareAll() {
	f.mu.Lock()
	f.sharedOn = true
	agents := f.agents
	f.mu.Unlock()
	for _, a := range agents {
		a.serve(f.ks, f.o.files, true)
	}
}

func (f *fleet) all() []*simAgent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.agents
}

// stop revokes every agent's lease (as agents stopping cleanly do) and
// waits for the dispatcher and workers, whose ctx the caller cancels.
func (f *fleet) stop() {
	var wg sync.WaitGroup
	for _, a := range f.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.stop()
		}()
	}
	wg.Wait()
}

// apply dispatches one batch of /assign/ events to the agents.
func (f *fleet) apply(b mirror.Batch) error {
	// Releases are queued after the lock is let go: the workers take it to
	// count, and a full queue must not stop them.
	var rel []releaseReq
	defer func() {
		for _, r := range rel {
			select {
			case f.releaseQ <- r:
			case <-f.ctx.Done():
				return
			}
		}
	}()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ev := range b.Events {
		a, r, ok := f.lookup(ev.KV.Key)
		if !ok {
			if ev.Type == mirror.Put {
				f.foreign++
			}
			continue
		}
		if ev.Type == mirror.Delete {
			f.forget(a, r)
			continue
		}
		a.mu.Lock()
		h, had := a.assigned[r]
		a.mu.Unlock()
		if had && h.createRev != ev.KV.CreateRevision {
			f.forget(a, r) // recreated while the watch was broken
			had = false
		}
		if !had {
			f.creates++
			f.count(a, r, +1)
			h = held{createRev: ev.KV.CreateRevision}
		}
		// Only a key rewritten in place can be revoking: the leader creates
		// assignments active. Decoding only those keeps a cold start of a
		// million keys cheap.
		if ev.KV.ModRevision != ev.KV.CreateRevision && !h.revoking {
			var v protocol.Assignment
			if err := protocol.Unmarshal(ev.KV.Key, ev.KV.Value, &v); err != nil {
				f.log.Warn("undecodable assignment", "key", ev.KV.Key, "err", err)
			} else if v.State == protocol.StateRevoking {
				h.revoking = true
				f.revoking++
				f.revokes++
				rel = append(rel, releaseReq{a: a, r: r, rev: h.createRev})
			}
		}
		a.mu.Lock()
		a.assigned[r] = h
		a.mu.Unlock()
	}
	return nil
}

// lookup maps an assignment key to its agent and file.
func (f *fleet) lookup(key string) (*simAgent, fileRef, bool) {
	k, err := f.ks.Parse(key)
	if err != nil || k.Kind != keyspace.KindAssign || (k.Topic != localTopic && k.Topic != sharedTopic) {
		return nil, fileRef{}, false
	}
	a := f.byID[k.Agent]
	owner, r, ok := parseFileKey(k.File)
	if a == nil || !ok || r.shared != (k.Topic == sharedTopic) || (!r.shared && owner != a.idx) ||
		(r.shared && int(r.idx) >= f.sharedTotal) || (!r.shared && int(r.idx) >= f.o.files) {
		return nil, fileRef{}, false
	}
	return a, r, true
}

// forget drops a key the agent held. Called with f.mu held.
func (f *fleet) forget(a *simAgent, r fileRef) {
	a.mu.Lock()
	h, had := a.assigned[r]
	delete(a.assigned, r)
	a.mu.Unlock()
	if !had {
		return
	}
	f.deletes++
	if h.revoking {
		f.revoking--
	}
	f.count(a, r, -1)
}

// count updates the totals for one key of a appearing (+1) or going (-1).
// Called with f.mu held.
func (f *fleet) count(a *simAgent, r fileRef, d int) {
	if !r.shared {
		f.localKeys += d
		a.mu.Lock()
		a.local += d
		a.mu.Unlock()
		return
	}
	n := f.sharedKeys[r.idx]
	f.sharedKeys[r.idx] = n + int16(d)
	switch {
	case n == 0 && d > 0:
		f.sharedAssigned++
	case n == 1 && d < 0:
		f.sharedAssigned--
	}
}

func (f *fleet) releaseLoop(ctx context.Context) {
	for {
		var req releaseReq
		select {
		case <-ctx.Done():
			return
		case req = <-f.releaseQ:
		}
		ok, err := req.a.release(ctx, f.ks, req.r, req.rev)
		f.mu.Lock()
		switch {
		case err != nil && ctx.Err() != nil:
		case err != nil:
			f.releases.failed++
			f.log.Warn("release failed", "agent", req.a.id, "file", fileKey(req.a.idx, req.r), "err", err)
		case ok:
			f.releases.ok++
		default:
			f.releases.fenced++
		}
		f.mu.Unlock()
	}
}

// counts is a snapshot of the dispatcher's totals.
type counts struct {
	localKeys, sharedAssigned, revoking, foreign int
	creates, deletes, revokes                    int64
	releasesOK, releasesFenced, releasesFailed   int64
}

func (f *fleet) counts() counts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return counts{localKeys: f.localKeys, sharedAssigned: f.sharedAssigned, revoking: f.revoking, foreign: f.foreign,
		creates: f.creates, deletes: f.deletes, revokes: f.revokes,
		releasesOK: f.releases.ok, releasesFenced: f.releases.fenced, releasesFailed: f.releases.failed}
}

// localDone reports whether every local file of the given agents is assigned.
func (f *fleet) localDone(agents []*simAgent) bool {
	for _, a := range agents {
		a.mu.Lock()
		n := a.local
		a.mu.Unlock()
		if n < f.o.files {
			return false
		}
	}
	return true
}

func (f *fleet) isShared() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sharedOn
}

// snapshot copies every assignment the agents hold: key -> create revision.
func (f *fleet) snapshot() map[string]int64 {
	out := map[string]int64{}
	for _, a := range f.all() {
		a.mu.Lock()
		for r, h := range a.assigned {
			out[a.id+"/"+fileKey(a.idx, r)] = h.createRev
		}
		a.mu.Unlock()
	}
	return out
}

// moved counts the assignments of before that are gone or were recreated.
func moved(before, after map[string]int64) int {
	n := 0
	for k, rev := range before {
		if after[k] != rev {
			n++
		}
	}
	return n
}

// leaseLosses sums the agents' lease losses (the Registrars' counters).
func (f *fleet) leaseLosses() (float64, error) {
	mfs, err := f.reg.Gather()
	if err != nil {
		return 0, fmt.Errorf("gather agent metrics: %w", err)
	}
	var sum float64
	for _, mf := range mfs {
		if !strings.HasSuffix(mf.GetName(), "_lease_losses_total") {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum, nil
}

// leasesHeld counts the agents holding a lease with every key written.
func (f *fleet) leasesHeld() int {
	n := 0
	for _, a := range f.all() {
		if a.reg.Lease() != 0 {
			n++
		}
	}
	return n
}
