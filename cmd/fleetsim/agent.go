package main

// Everything a simulated agent does against etcd is in this file, so that it
// can follow the real agent (pkg/agent) when that changes: the files it
// reports, its lease and keys (the real pkg/heartbeat Registrar), the
// release of a revoking assignment, and the checkpoint model. The rest of
// the simulator only starts agents, dispatches assignment events to them and
// measures.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/heartbeat"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/protocol"
)

// The simulated topics: one local (each file belongs to the one host that
// has it), one shared (a volume several hosts mount; each file goes to one).
const (
	localTopic  = "simlocal"
	sharedTopic = "simshared"
)

// sharedMarker stands in the agent half of a shared file's key: a shared
// file belongs to no agent in particular.
const sharedMarker = 0xffffffff

// fileRef names one simulated file: the idx-th local file of its agent, or
// the idx-th shared file. Keys, paths and identities are derived from it,
// so the simulator stores 8 bytes per file instead of strings.
type fileRef struct {
	shared bool
	idx    int32
}

// held is what an agent knows of one assignment key of its own.
type held struct {
	createRev int64
	revoking  bool
}

// simAgent is one simulated host.
type simAgent struct {
	idx     int
	id      string
	cli     *clientv3.Client
	reg     *heartbeat.Registrar
	started time.Time
	shared  []int32 // the shared files this host sees
	cancel  context.CancelFunc
	done    chan struct{}

	mu       sync.Mutex
	assigned map[fileRef]held
	local    int // local files among assigned
}

// agentID is a made-up but valid agent id (an IPv4 address in 10/8).
func agentID(idx int) string {
	n := idx + 1
	return fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255)
}

// mix is a 64-bit finaliser (splitmix64): it spreads structured numbers
// over the key space the way real identities' hashes are spread.
func mix(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 + b + 0x632be59bd9b4e019
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// owner is the agent half of a file's key.
func (r fileRef) owner(agentIdx int) uint32 {
	if r.shared {
		return sharedMarker
	}
	return uint32(agentIdx)
}

// fileKey is the <file> key: 32 hex digits like a real one (pkg/fileid), and
// decodable: the agent index (or sharedMarker), the file index, a hash.
func fileKey(agentIdx int, r fileRef) string {
	o := r.owner(agentIdx)
	return fmt.Sprintf("%08x%08x%016x", o, uint32(r.idx), mix(uint64(o), uint64(r.idx)))
}

// parseFileKey is the inverse of fileKey.
func parseFileKey(key string) (agentIdx int, r fileRef, ok bool) {
	if len(key) != 32 {
		return 0, fileRef{}, false
	}
	var o, i uint32
	if _, err := fmt.Sscanf(key[:16], "%08x%08x", &o, &i); err != nil {
		return 0, fileRef{}, false
	}
	if o == sharedMarker {
		return -1, fileRef{shared: true, idx: int32(i)}, true
	}
	return int(o), fileRef{idx: int32(i)}, true
}

func (r fileRef) topic() string {
	if r.shared {
		return sharedTopic
	}
	return localTopic
}

func (r fileRef) path() string {
	if r.shared {
		return fmt.Sprintf("/mnt/shared/fleetsim/f-%d.log", r.idx)
	}
	return fmt.Sprintf("/var/log/fleetsim/app-%d.log", r.idx)
}

// identity is a made-up file identity: a 64-hex-digit fingerprint and an
// inode; local files carry a device too, as pkg/fileid does.
func identity(agentIdx int, r fileRef) protocol.FileIdentity {
	o := uint64(r.owner(agentIdx))
	id := protocol.FileIdentity{Inode: 1000 + uint64(r.idx)}
	var fp string
	for i := range uint64(4) {
		fp += fmt.Sprintf("%016x", mix(o^i<<40, uint64(r.idx)))
	}
	id.Fingerprint = fp
	if !r.shared {
		id.Device = 2049
	}
	return id
}

// heartbeatValue is the agent's heartbeat for one topic, exactly the
// protocol.Heartbeat the agent writes (sizes left out, as the agent does).
func (a *simAgent) heartbeatValue(refs []fileRef) []byte {
	hb := protocol.Heartbeat{Agent: a.id, Version: "fleetsim", Started: a.started}
	hb.Files = make([]protocol.SeenFile, 0, len(refs))
	for _, r := range refs {
		hb.Files = append(hb.Files, protocol.SeenFile{Key: fileKey(a.idx, r), Path: r.path(), Identity: identity(a.idx, r)})
	}
	return mustMarshal(&hb)
}

func (a *simAgent) statusValue() []byte {
	return mustMarshal(&protocol.AgentStatus{Agent: a.id, Version: "fleetsim", Updated: a.started, Problems: []protocol.Problem{}})
}

func mustMarshal(v protocol.Value) []byte {
	data, err := protocol.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encode %T: %v", v, err)) // only our own fixed values are encoded
	}
	return data
}

// newAgent builds agent idx with the real Registrar (lease of ttl, its
// keys rewritten after a loss, revoked on stop); metrics go to reg under
// the agent's label.
func newAgent(idx int, cli *clientv3.Client, ttl time.Duration, reg prometheus.Registerer, log *slog.Logger) (*simAgent, error) {
	a := &simAgent{idx: idx, id: agentID(idx), cli: cli, started: time.Now().UTC().Truncate(time.Second),
		assigned: map[fileRef]held{}, done: make(chan struct{})}
	r, err := heartbeat.New(heartbeat.Config{Client: cli, TTL: ttl, Logger: log, MetricsPrefix: "fleetsim",
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"agent": a.id}, reg)})
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", a.id, err)
	}
	a.reg = r
	return a, nil
}

// serve sets the agent's keys: its status, and a heartbeat per topic listing
// files local files (if any) and its shared files (if sharedOn).
func (a *simAgent) serve(ks keyspace.Space, files int, sharedOn bool) {
	a.reg.Set(ks.AgentStatus(a.id), a.statusValue())
	if files > 0 {
		refs := make([]fileRef, files)
		for i := range refs {
			refs[i] = fileRef{idx: int32(i)}
		}
		a.reg.Set(ks.Heartbeat(localTopic, a.id), a.heartbeatValue(refs))
	}
	if sharedOn && len(a.shared) > 0 {
		refs := make([]fileRef, len(a.shared))
		for i, j := range a.shared {
			refs[i] = fileRef{shared: true, idx: j}
		}
		a.reg.Set(ks.Heartbeat(sharedTopic, a.id), a.heartbeatValue(refs))
	}
}

// run holds the lease until ctx is done, then revokes it (Registrar.Run).
func (a *simAgent) run(ctx context.Context) {
	ctx, a.cancel = context.WithCancel(ctx)
	go func() {
		defer close(a.done)
		_ = a.reg.Run(ctx)
	}()
}

func (a *simAgent) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
}

// release hands a revoking assignment back as the agent does (pkg/agent
// loop.go, release): one Txn guarded by the assignment's create revision
// writes the final checkpoint and deletes the assignment. The real agent
// first waits for Kafka's acknowledgements; the simulator has none to wait
// for.
func (a *simAgent) release(ctx context.Context, ks keyspace.Space, r fileRef, createRev int64) (bool, error) {
	key := ks.Assign(a.id, r.topic(), fileKey(a.idx, r))
	resp, err := a.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", createRev)).
		Then(clientv3.OpDelete(key), clientv3.OpPut(ks.Offset(r.topic(), fileKey(a.idx, r)), string(a.checkpointValue(r, 0)))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (a *simAgent) checkpointValue(r fileRef, offset int64) []byte {
	return mustMarshal(&protocol.Checkpoint{Offset: offset, Identity: identity(a.idx, r), Path: r.path(),
		Agent: a.id, Size: offset, Updated: time.Now().UTC()})
}

// checkpointModel is how agents write checkpoints to etcd; the agent's
// etcd tier (pkg/agent checkpoint.go): every etcd interval (sized to the
// fleet by default, see options.validate), one Txn per batch of files whose
// offset moved, each Put guarded by the create revision of the file's
// assignment key. The local tier (the state file) costs etcd nothing and
// is not modelled. Change this (and its flags) when the agent's checkpoint
// design changes.
type checkpointModel struct {
	interval time.Duration
	batch    int     // files per Txn, at most etcd's --max-txn-ops
	busy     float64 // share of assigned files whose offset moves each interval
}

// cpStats are the checkpoint scenario's counts over every agent.
type cpStats struct {
	mu      sync.Mutex
	lat     []time.Duration
	asked   int64 // keys the agents meant to write
	written int64 // keys in Txns that succeeded
	txns    int64
	fenced  int64 // Txns whose guard failed
	errs    int64
	errKind map[string]int64 // error text -> count
}

func (s *cpStats) add(asked, written int, d time.Duration, fenced bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked += int64(asked)
	if err != nil {
		s.errs++
		if s.errKind == nil {
			s.errKind = map[string]int64{}
		}
		s.errKind[err.Error()]++
		return
	}
	s.txns++
	s.lat = append(s.lat, d)
	if fenced {
		s.fenced++
		return
	}
	s.written += int64(written)
}

// commonError is the most frequent Txn error and its count.
func (s *cpStats) commonError() (string, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var kind string
	var n int64
	for k, c := range s.errKind {
		if c > n || (c == n && k < kind) {
			kind, n = k, c
		}
	}
	return kind, n
}

// quantile of the Txn latencies (q in 0..1); 0 with none.
func (s *cpStats) quantile(q float64) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lat) == 0 {
		return 0
	}
	sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
	return s.lat[min(len(s.lat)-1, int(q*float64(len(s.lat))))]
}

// busyFile decides, the same way every interval, whether file r moves.
func (m checkpointModel) busyFile(agentIdx int, r fileRef) bool {
	if m.busy >= 1 {
		return true
	}
	return float64(mix(uint64(r.owner(agentIdx))^uint64(agentIdx)<<32, uint64(r.idx))%10000) < m.busy*10000
}

// run writes checkpoints until ctx is done. Agents start at a random phase
// of the interval, as real hosts do; like the agent's loop, a checkpoint
// that takes longer than the interval delays the next one.
func (m checkpointModel) run(ctx context.Context, a *simAgent, ks keyspace.Space, st *cpStats) {
	first := time.NewTimer(time.Duration(rand.Int64N(int64(m.interval))))
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	tick := time.NewTicker(m.interval)
	defer tick.Stop()
	for n := int64(1); ; n++ {
		m.writeAll(ctx, a, ks, st, n*4096)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// writeAll writes one interval's checkpoints of agent a.
func (m checkpointModel) writeAll(ctx context.Context, a *simAgent, ks keyspace.Space, st *cpStats, offset int64) {
	type due struct {
		r   fileRef
		rev int64
	}
	var todo []due
	a.mu.Lock()
	for r, h := range a.assigned {
		if !h.revoking && m.busyFile(a.idx, r) {
			todo = append(todo, due{r, h.createRev})
		}
	}
	a.mu.Unlock()
	for len(todo) > 0 && ctx.Err() == nil {
		batch := todo[:min(len(todo), m.batch)]
		todo = todo[len(batch):]
		cmps := make([]clientv3.Cmp, 0, len(batch))
		puts := make([]clientv3.Op, 0, len(batch))
		gets := make([]clientv3.Op, 0, len(batch))
		for _, d := range batch {
			key := fileKey(a.idx, d.r)
			akey := ks.Assign(a.id, d.r.topic(), key)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(akey), "=", d.rev))
			puts = append(puts, clientv3.OpPut(ks.Offset(d.r.topic(), key), string(a.checkpointValue(d.r, offset))))
			gets = append(gets, clientv3.OpGet(akey)) // the agent reads which files it lost
		}
		start := time.Now()
		resp, err := a.cli.Txn(ctx).If(cmps...).Then(puts...).Else(gets...).Commit()
		if ctx.Err() != nil {
			return // cut off by the scenario's end: neither a success nor an etcd error
		}
		fenced := err == nil && !resp.Succeeded
		st.add(len(batch), len(batch), time.Since(start), fenced, err)
	}
}
