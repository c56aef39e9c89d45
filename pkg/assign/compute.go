package assign

import (
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/buraksezer/consistent"
)

// Input is what the coordinator knows about one topic.
type Input struct {
	// Shared selects the bounded consistent-hash assignment; otherwise the
	// topic is local and each file goes to the member that sees it.
	Shared bool
	// Members are the live agents of the topic (heartbeats). Duplicates and
	// order are irrelevant; "" is ignored (Move uses "" for "nobody").
	Members []string
	// Sees maps a member to the file keys it reports. Entries of ids that
	// are not live members are ignored, as are duplicate and "" file keys
	// and the order of the slices. Passing the same slice for members that
	// report the same files saves work (members with equal sets are grouped
	// anyway, at the cost of reading each slice).
	Sees map[string][]string
	// Current is the assignment stored in etcd: file -> member. Entries for
	// files nobody sees, for members that are not live or that do not see
	// the file are ignored (the file counts as unassigned).
	Current map[string]string
	// CurrentOf, when set, is used instead of Current: it returns the
	// current member of a file ("" for none), and is asked only about the
	// files of the input. A caller that holds the assignment in a structure
	// of its own saves building a map of every file (about 70 MB a pass at
	// a million files).
	CurrentOf func(file string) string
}

// Assigner computes assignments and keeps the consistent ring between calls,
// because building it costs O(members^2) in consistent v1.0.0 (see Sync).
// Keep one Assigner per shared topic. The results of its Compute are exactly
// those of the package-level Compute with the same Config: the cache changes
// the cost, never the result. ComputeNow trades that exactness for never
// waiting on the ring. It is safe for concurrent use.
type Assigner struct {
	cfg Config

	syncMu sync.Mutex // held by Sync, which alone touches ring and inRing
	ring   *consistent.Consistent
	inRing map[string]struct{}
	table  atomic.Pointer[ringTable]
}

// NewAssigner validates cfg and returns an Assigner with an empty ring.
func NewAssigner(cfg Config) (*Assigner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Assigner{cfg: cfg.withDefaults()}, nil
}

// Compute returns the new assignment, file -> member, building the ring from
// scratch. Files no live member sees are absent. See doc.go for the rules.
func Compute(cfg Config, in Input) (map[string]string, error) {
	a, err := NewAssigner(cfg)
	if err != nil {
		return nil, err
	}
	return a.Compute(in)
}

// Compute returns the new assignment, file -> member, like the package-level
// Compute, reusing the ring of the previous call: it first Syncs the ring to
// the input's members.
func (a *Assigner) Compute(in Input) (map[string]string, error) {
	r, err := a.compute(in, true)
	if err != nil {
		return nil, err
	}
	return r.Map(), nil
}

// ComputeResult is Compute returning a Result instead of a map.
func (a *Assigner) ComputeResult(in Input) (*Result, error) {
	return a.compute(in, true)
}

// ComputeNow returns a new assignment like Compute, but with the ring as the
// last Sync left it, never building or updating it (Sync runs elsewhere,
// off the caller's critical path). The result obeys every rule of doc.go
// (validity, bound, stickiness); only the preferred member of files placed
// or pulled now may differ from Compute's while the ring lags: partitions
// of members gone from the topic are nobody's, members not yet in the ring
// own none, and without any ring every file is placed by the member ring
// walk. Since valid assignments are kept, the lag moves nothing later.
func (a *Assigner) ComputeNow(in Input) (map[string]string, error) {
	r, err := a.compute(in, false)
	if err != nil {
		return nil, err
	}
	return r.Map(), nil
}

// ComputeNowResult is ComputeNow returning a Result instead of a map.
func (a *Assigner) ComputeNowResult(in Input) (*Result, error) {
	return a.compute(in, false)
}

func (a *Assigner) compute(in Input, sync bool) (*Result, error) {
	x, err := buildIndex(in)
	if err != nil {
		return nil, err
	}
	if len(x.names) == 0 || len(x.keys) == 0 {
		return &Result{}, nil
	}
	s := newState(x)
	if in.CurrentOf != nil {
		s.keepOf(in.CurrentOf)
	} else {
		s.keep(in.Current)
	}
	if !in.Shared {
		s.placeLocal()
		return s.result(), nil
	}
	owners := a.owners
	if sync {
		owners = a.syncRing
	}
	s.initShared(a.cfg.Epsilon, owners(x))

	s.resolve()
	s.place()
	// Pulls may lower a full member below the cap, and resolving an
	// overload may give a starved member something to pull; alternate until
	// neither moves anything. Both only ever reduce a non-negative potential
	// (total overload, total starvation), so this terminates, and in practice
	// after one round.
	for s.pull() && s.resolve() {
	}
	return s.result(), nil
}

// Room levels: a member has room at level l when its load is below thr[l].
const (
	lvlAvg = 0 // ceil(files/members): where placement aims
	lvlCap = 1 // the bound
)

// state is one computation: the assignment being built and its indexes.
type state struct {
	x      *index
	holder []int32 // file -> member, -1 unassigned
	load   []int32 // member -> files held
	moves  int     // changes made; used to detect that a phase did something

	// Shared topics only.
	target  int32    // floor(files/members): what a starved member pulls up to
	thr     [2]int32 // lvlAvg, lvlCap thresholds
	owners  []int32  // consistent partition -> member
	ring    memberRing
	room    [2][]uint64 // ring-index bitsets of members with room per level
	starved []int32     // members with 2*load < target after keep

	// Lazily built: each member's files, for overload resolution and
	// augmenting paths (heldPos: file -> position in its holder's list).
	heldOn  bool
	held    [][]int32
	heldPos []int32

	// Lazily built: files by ring owner (CSR), for pulls.
	ownedStart, ownedList []int32

	// Breadth-first search scratch. dead is per view: a failed search
	// always covers whole views (see augment).
	gen              uint32
	mark, vmark      []uint32
	dead             []uint32
	deadGen          uint32
	parentM, parentF []int32
	queue            []int32

	// Lazily built per view: min-heaps of (load, member) for overflow.
	heaps [][]loadedMember
}

type loadedMember struct{ load, m int32 }

func (a loadedMember) less(b loadedMember) bool {
	return a.load < b.load || a.load == b.load && a.m < b.m
}

func newState(x *index) *state {
	s := &state{
		x:      x,
		holder: make([]int32, len(x.keys)),
		load:   make([]int32, len(x.names)),
	}
	for f := range s.holder {
		s.holder[f] = -1
	}
	return s
}

// keep takes every valid current assignment: live member that sees the file.
// It looks each Current key up in the sorted files, or each file up in
// Current when Current is the larger side; both give the same result.
func (s *state) keep(current map[string]string) {
	take := func(f int32, name string) {
		if m, ok := s.x.ix[name]; ok && s.x.eligible(m, f) {
			s.holder[f] = m
			s.load[m]++
		}
	}
	if len(current) < len(s.holder)/16 {
		for key, name := range current {
			if f := s.x.fileID(key); f >= 0 {
				take(f, name)
			}
		}
		return
	}
	for f, key := range s.x.keys {
		if name, ok := current[key]; ok {
			take(int32(f), name)
		}
	}
}

// keepOf is keep with the current assignment as a function.
func (s *state) keepOf(current func(string) string) {
	for f, key := range s.x.keys {
		if name := current(key); name != "" {
			if m, ok := s.x.ix[name]; ok && s.x.eligible(m, int32(f)) {
				s.holder[f] = m
				s.load[m]++
			}
		}
	}
}

// placeLocal gives each unassigned file of a local topic to the smallest
// member id (name order) that sees it. Normally exactly one member sees a
// file of a local topic; when several report the same key, the current
// holder was kept by keep, else the smallest name wins.
func (s *state) placeLocal() {
	for f, h := range s.holder {
		if h >= 0 {
			continue
		}
		best := int32(len(s.x.names))
		for _, v := range s.x.viewsOf(int32(f)) {
			best = min(best, s.x.views[v].members[0])
		}
		s.holder[f] = best
	}
}

func (s *state) result() *Result {
	n := 0
	for _, h := range s.holder {
		if h >= 0 {
			n++
		}
	}
	return &Result{x: s.x, holder: s.holder, n: n}
}

// smallView: views with at most this many members are scanned member by
// member in findRoom; larger ones get a ring-order bitset.
const smallView = 16

func (s *state) initShared(eps float64, owners []int32) {
	x := s.x
	nf, nm := len(x.keys), len(x.names)
	s.owners = owners
	s.target = int32(nf / nm)
	s.thr[lvlAvg] = int32((nf + nm - 1) / nm)
	s.thr[lvlCap] = int32(capacity(nf, nm, eps))
	s.ring = newMemberRing(x.names)
	words := (nm + 63) / 64
	for l := range s.room {
		s.room[l] = make([]uint64, words)
	}
	for m := range s.load {
		s.updRoom(int32(m))
	}
	for v := range x.views {
		vw := &x.views[v]
		if vw.full || len(vw.members) <= smallView {
			continue
		}
		vw.bits = make([]uint64, words)
		for _, m := range vw.members {
			i := s.ring.idx[m]
			vw.bits[i>>6] |= 1 << (i & 63)
		}
	}
	for m, l := range s.load {
		if 2*l < s.target {
			s.starved = append(s.starved, int32(m))
		}
	}
	s.mark = make([]uint32, nm)
	s.dead = make([]uint32, len(x.views))
	s.vmark = make([]uint32, len(x.views))
	s.parentM = make([]int32, nm)
	s.parentF = make([]int32, nm)
}

// ringOwner is consistent's LocateKey(key) for file f, without converting
// the key: partition hash(key) % PartitionCount, then its owner
// (TestRingOwnerMatchesLocateKey).
func (s *state) ringOwner(f int32) int32 {
	return s.owners[s.x.hash[f]%uint64(len(s.owners))]
}

func (s *state) updRoom(m int32) {
	if s.room[0] == nil {
		return
	}
	i := s.ring.idx[m]
	w, b := i>>6, uint64(1)<<(i&63)
	for l := range s.room {
		if s.load[m] < s.thr[l] {
			s.room[l][w] |= b
		} else {
			s.room[l][w] &^= b
		}
	}
}

func (s *state) move(f, to int32) {
	from := s.holder[f]
	if from == to {
		return
	}
	if from >= 0 {
		s.load[from]--
		s.updRoom(from)
		if s.heldOn {
			l := s.held[from]
			i, last := s.heldPos[f], l[len(l)-1]
			l[i] = last
			s.heldPos[last] = i
			s.held[from] = l[:len(l)-1]
		}
	}
	s.holder[f] = to
	if to >= 0 {
		s.load[to]++
		s.updRoom(to)
		if s.heldOn {
			s.heldPos[f] = int32(len(s.held[to]))
			s.held[to] = append(s.held[to], f)
		}
	}
	s.moves++
}

func (s *state) ensureHeld() {
	if s.heldOn {
		return
	}
	s.heldOn = true
	s.held = make([][]int32, len(s.load))
	s.heldPos = make([]int32, len(s.holder))
	const slack = 8
	backing := make([]int32, 0, len(s.holder)+slack*len(s.load))
	for m, l := range s.load {
		off := len(backing)
		backing = backing[:off+int(l)+slack]
		s.held[m] = backing[off : off : off+int(l)+slack]
	}
	for f, h := range s.holder {
		if h >= 0 {
			s.heldPos[f] = int32(len(s.held[h]))
			s.held[h] = append(s.held[h], int32(f))
		}
	}
}

// findRoom returns the member that file f should go to among the members
// that see it and have room at level lvl, or -1: the consistent ring owner
// if it qualifies, else the first qualifying member clockwise from the
// file's hash on the member ring (consistent hashing with bounded loads, one
// point per member).
func (s *state) findRoom(f int32, lvl int) int32 {
	x, room := s.x, s.room[lvl]
	if r := s.ringOwner(f); r >= 0 && s.load[r] < s.thr[lvl] && x.eligible(r, f) {
		return r
	}
	nm := len(x.names)
	start := s.ring.start(x.hash[f])
	best, bestD := int32(-1), nm
	for _, v := range x.viewsOf(f) {
		vw := &x.views[v]
		if vw.full || vw.bits != nil {
			if i := nextBit(room, vw.bits, start); i >= 0 {
				if d := (i - start + nm) % nm; d < bestD {
					best, bestD = s.ring.mem[i], d
				}
			}
			continue
		}
		for _, m := range vw.members {
			if s.load[m] >= s.thr[lvl] {
				continue
			}
			if d := (int(s.ring.idx[m]) - start + nm) % nm; d < bestD {
				best, bestD = m, d
			}
		}
	}
	return best
}

// nextBit returns the first index >= start, wrapping round, whose bit is set
// in a (and in mask, unless mask is nil), or -1. Bits past the last member
// are never set.
func nextBit(a, mask []uint64, start int) int {
	nw := len(a)
	w := start >> 6
	word := a[w]
	if mask != nil {
		word &= mask[w]
	}
	word &= ^uint64(0) << (start & 63)
	for k := 0; k <= nw; k++ {
		if word != 0 {
			return w<<6 + bits.TrailingZeros64(word)
		}
		w++
		if w == nw {
			w = 0
		}
		word = a[w]
		if mask != nil {
			word &= mask[w]
		}
	}
	return -1
}

// overflowTarget is where a file goes when no member that sees it can take
// it within the bound (only possible when members see different files): the
// least loaded member that sees it, ties to the smallest id. Each view keeps
// a lazy min-heap, valid because loads never decrease while placing (a
// hand-over chain gives one and takes one at every step but the last).
func (s *state) overflowTarget(f int32) int32 {
	if s.heaps == nil {
		s.heaps = make([][]loadedMember, len(s.x.views))
	}
	best := loadedMember{m: -1}
	for _, v := range s.x.viewsOf(f) {
		h := s.heaps[v]
		if h == nil {
			for _, m := range s.x.views[v].members {
				h = append(h, loadedMember{s.load[m], m})
			}
			for i := len(h)/2 - 1; i >= 0; i-- {
				siftDown(h, i)
			}
			s.heaps[v] = h
		}
		for h[0].load != s.load[h[0].m] { // stale: the load grew since
			h[0].load = s.load[h[0].m]
			siftDown(h, 0)
		}
		if best.m < 0 || h[0].less(best) {
			best = h[0]
		}
	}
	return best.m
}

func siftDown(h []loadedMember, i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h[c+1].less(h[c]) {
			c++
		}
		if !h[c].less(h[i]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

// resolve brings members above the cap down to it where possible: first by
// moving their files (those whose ring owner is another member first, then
// in file order) to a member with room that sees them, then along augmenting
// paths. A member that stays above the cap has no path to any room: the
// bound is infeasible for it. Reports whether anything moved.
func (s *state) resolve() bool {
	var over []int32
	for m, l := range s.load {
		if l > s.thr[lvlCap] {
			over = append(over, int32(m))
		}
	}
	if len(over) == 0 {
		return false
	}
	before := s.moves
	s.ensureHeld()
	s.deadGen++
	for _, m := range over {
		files := slices.Clone(s.held[m])
		slices.SortFunc(files, func(a, b int32) int {
			ao, bo := s.ringOwner(a) == m, s.ringOwner(b) == m
			if ao != bo {
				if ao {
					return 1
				}
				return -1
			}
			return int(a - b)
		})
		for _, f := range files {
			if s.load[m] <= s.thr[lvlCap] {
				break
			}
			t := s.findRoom(f, lvlAvg)
			if t < 0 {
				t = s.findRoom(f, lvlCap)
			}
			if t >= 0 {
				s.move(f, t)
			}
		}
		for s.load[m] > s.thr[lvlCap] && s.dead[s.x.viewOf[m]] != s.deadGen {
			if _, ok := s.augment([]int32{m}); !ok {
				break
			}
		}
	}
	return s.moves != before
}

// place assigns every unassigned file, in file order: ring owner or ring
// walk at the average level, then at the cap, then through an augmenting
// path, and when the bound is infeasible to its least loaded member.
func (s *state) place() {
	s.deadGen++
	var starts []int32
	for i, h := range s.holder {
		if h >= 0 {
			continue
		}
		f := int32(i)
		t := s.findRoom(f, lvlAvg)
		if t < 0 {
			t = s.findRoom(f, lvlCap)
		}
		if t < 0 {
			s.ensureHeld()
			starts = starts[:0]
			for _, v := range s.x.viewsOf(f) {
				if s.dead[v] != s.deadGen {
					starts = append(starts, s.x.views[v].members...)
				}
			}
			if len(starts) > 0 {
				if root, ok := s.augment(starts); ok {
					t = root
				}
			}
		}
		if t < 0 {
			t = s.overflowTarget(f)
		}
		s.move(f, t)
	}
}

// augment searches breadth-first, from the members in starts (all without
// room), for a chain start -> ... -> b where each member hands one of its
// files to the next, which sees it, and b has room under the cap. It
// performs the hand-overs and returns the start member, which is left with
// one file fewer. When there is none, every member reached is full and
// their files can only go to one another, which stays true while the phase
// only fills rooms: they are marked dead for the rest of the phase. The
// search reaches whole views (a member's files are seen by its whole view,
// and a start without room holds a file), so dead is kept per view.
func (s *state) augment(starts []int32) (int32, bool) {
	s.gen++
	g, x := s.gen, s.x
	q := s.queue[:0]
	defer func() { s.queue = q[:0] }()
	for _, m := range starts {
		if s.mark[m] == g {
			continue
		}
		s.mark[m] = g
		s.parentM[m] = -1
		q = append(q, m)
	}
	for i := 0; i < len(q); i++ {
		a := q[i]
		for _, file := range s.held[a] {
			for _, v := range x.viewsOf(file) {
				if s.vmark[v] == g || s.dead[v] == s.deadGen {
					continue
				}
				s.vmark[v] = g
				for _, b := range x.views[v].members {
					if s.mark[b] == g {
						continue
					}
					s.mark[b] = g
					s.parentM[b], s.parentF[b] = a, file
					if s.load[b] < s.thr[lvlCap] {
						cur := b
						for s.parentM[cur] >= 0 {
							p := s.parentM[cur]
							s.move(s.parentF[cur], cur)
							cur = p
						}
						return cur, true
					}
					q = append(q, b)
				}
			}
		}
	}
	for _, m := range q {
		s.dead[x.viewOf[m]] = s.deadGen
	}
	return -1, false
}

// ownedBy returns the files whose ring owner is m, in file order.
func (s *state) ownedBy(m int32) []int32 {
	if s.ownedStart == nil {
		nm := len(s.load)
		s.ownedStart = make([]int32, nm+1)
		for f := range s.holder {
			if o := s.ringOwner(int32(f)); o >= 0 {
				s.ownedStart[o+1]++
			}
		}
		for i := 0; i < nm; i++ {
			s.ownedStart[i+1] += s.ownedStart[i]
		}
		s.ownedList = make([]int32, s.ownedStart[nm])
		next := slices.Clone(s.ownedStart[:nm])
		for f := range s.holder {
			if o := s.ringOwner(int32(f)); o >= 0 {
				s.ownedList[next[o]] = int32(f)
				next[o]++
			}
		}
	}
	return s.ownedList[s.ownedStart[m]:s.ownedStart[m+1]]
}

// pull lets every starved member (one that held fewer than target/2 files
// after keep, typically one that just joined) take files up to target =
// floor(files/members), only from members holding more than target: first
// the files whose consistent ring owner it is, then any file it sees, in
// file order. Reports whether anything moved.
//
// Why this shape: without pulls nobody would ever move to a new member.
// Pulling only into starved members (hysteresis: trigger at target/2, fill to
// target) keeps a leave from triggering pulls everywhere when the average
// rises, and taking only from members above target never creates a new
// starved member, so one pass settles and a second call moves nothing.
func (s *state) pull() bool {
	if len(s.starved) == 0 {
		return false
	}
	x, t := s.x, s.target
	before := s.moves
	// Files passed over by a view's scan are held by members at or below
	// target, whose loads only decrease during pulls: they stay unavailable
	// and later scans of the same view resume where the last one stopped.
	cursor := make([]int, len(x.views))
	for _, n := range s.starved {
		if s.load[n] >= t {
			continue
		}
		for _, f := range s.ownedBy(n) {
			if s.load[n] >= t {
				break
			}
			if h := s.holder[f]; h != n && h >= 0 && s.load[h] > t && x.eligible(n, f) {
				s.move(f, n)
			}
		}
		v := x.viewOf[n]
		files := x.viewFiles(v)
		nf := x.views[v].n
		for c := cursor[v]; c < nf && s.load[n] < t; c++ {
			f := int32(c)
			if files != nil {
				f = files[c]
			}
			if h := s.holder[f]; h != n && h >= 0 && s.load[h] > t {
				s.move(f, n)
			}
			cursor[v] = c + 1
		}
	}
	return s.moves != before
}
