package assign

import (
	"slices"
	"sort"
	"time"

	"github.com/buraksezer/consistent"
)

// ringMember is a member of the consistent ring.
type ringMember string

func (m ringMember) String() string { return string(m) }

// SyncStats describes one Sync.
type SyncStats struct {
	// Cold is set when the ring was built from scratch (consistent.New):
	// the first Sync, or one that changes more than half the members.
	Cold bool
	// Added and Removed count the members changed incrementally (or, cold,
	// the members the ring was built with in Added).
	Added, Removed int
	// Took is how long it took.
	Took time.Duration
}

// ringTable is an immutable snapshot of the ring's partition table.
type ringTable struct {
	members []string // sorted, distinct
	owners  []string // partition -> member ("" for none)
}

// RingMembers returns the members of in that count for the ring: the
// distinct, non-empty ids of in.Members that report at least one file,
// sorted (the members Compute indexes).
func RingMembers(in Input) []string {
	var out []string
	for _, m := range in.Members {
		if m == "" {
			continue
		}
		if slices.ContainsFunc(in.Sees[m], func(f string) bool { return f != "" }) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// InSync reports whether the ring holds exactly members (sorted, distinct,
// as RingMembers returns them).
func (a *Assigner) InSync(members []string) bool {
	t := a.table.Load()
	if t == nil {
		return len(members) == 0
	}
	return slices.Equal(t.members, members)
}

// Sync brings the ring to the member set members (sorted, distinct, as
// RingMembers returns them). This is the expensive part of an Assigner:
// consistent v1.0.0 re-sorts its whole ring on every member it adds, so
// consistent.New costs O(members^2 * ReplicationFactor), about 0.5 s for
// 1,000 members and 50 s for 10,000 (RF 20). Sync therefore applies
// membership changes with Add and Remove (O(members * ReplicationFactor)
// each, about 10 ms at 10,000 members) and builds from scratch only the first
// time or when more than half the members changed. consistent's partition
// table depends only on the member set, not on the order of Add and Remove,
// so the synced ring equals a freshly built one
// (TestRingIncrementalEqualsFresh), barring a 64-bit hash collision between
// two virtual nodes, where consistent's ring map keeps whichever member was
// added last.
//
// Syncs are serialised with each other but never block ComputeNow, which
// reads the partition table of the last completed Sync.
func (a *Assigner) Sync(members []string) SyncStats {
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	start := time.Now()
	var st SyncStats
	var adds, removes []string
	if a.ring != nil {
		for m := range a.inRing {
			if _, ok := slices.BinarySearch(members, m); !ok {
				removes = append(removes, m)
			}
		}
		for _, m := range members {
			if _, ok := a.inRing[m]; !ok {
				adds = append(adds, m)
			}
		}
		if len(adds)+len(removes) == 0 {
			return st
		}
	}
	cfg := consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    a.cfg.PartitionCount,
		ReplicationFactor: a.cfg.ReplicationFactor,
		Load:              1 + a.cfg.Epsilon, // >= 1: consistent panics below 1
	}
	switch {
	case a.ring == nil || 2*(len(adds)+len(removes)) > len(members):
		// New costs about as much as len(members)/2 Adds.
		ms := make([]consistent.Member, len(members))
		a.inRing = make(map[string]struct{}, len(members))
		for i, m := range members {
			ms[i] = ringMember(m)
			a.inRing[m] = struct{}{}
		}
		a.ring = consistent.New(ms, cfg)
		st.Cold, st.Added = true, len(members)
	default:
		slices.Sort(removes)
		for _, m := range removes {
			a.ring.Remove(m)
			delete(a.inRing, m)
		}
		for _, m := range adds {
			a.ring.Add(ringMember(m))
			a.inRing[m] = struct{}{}
		}
		st.Added, st.Removed = len(adds), len(removes)
	}
	t := &ringTable{members: slices.Clone(members), owners: make([]string, a.cfg.PartitionCount)}
	for p := range t.owners {
		if m := a.ring.GetPartitionOwner(p); m != nil {
			t.owners[p] = m.String()
		}
	}
	a.table.Store(t)
	st.Took = time.Since(start)
	return st
}

// owners maps the last synced partition table onto x: partition -> member
// id in x, or -1 when the partition's member is not one of x's (or no ring
// was synced yet). Files of such partitions are placed by the member ring
// walk (findRoom), like those of a member that is full.
func (a *Assigner) owners(x *index) []int32 {
	owners := make([]int32, a.cfg.PartitionCount)
	t := a.table.Load()
	for p := range owners {
		owners[p] = -1
		if t == nil {
			continue
		}
		if id, ok := x.ix[t.owners[p]]; ok {
			owners[p] = id
		}
	}
	return owners
}

// syncRing syncs the ring to x's members and returns the partition owners.
func (a *Assigner) syncRing(x *index) []int32 {
	a.Sync(x.names)
	return a.owners(x)
}

// memberRing orders members by the hash of their name: the circle the
// fallback walk goes round (see findRoom). One point per member suffices
// because the walk skips members without room.
type memberRing struct {
	pos []uint64 // ascending
	mem []int32  // ring index -> member
	idx []int32  // member -> ring index
}

func newMemberRing(names []string) memberRing {
	n := len(names)
	r := memberRing{pos: make([]uint64, n), mem: make([]int32, n), idx: make([]int32, n)}
	for i := range r.mem {
		r.mem[i] = int32(i)
	}
	h := make([]uint64, n)
	for i, name := range names {
		h[i] = hashString(name)
	}
	slices.SortFunc(r.mem, func(a, b int32) int {
		if h[a] != h[b] {
			if h[a] < h[b] {
				return -1
			}
			return 1
		}
		return int(a - b) // names are distinct and sorted by id
	})
	for i, m := range r.mem {
		r.pos[i] = h[m]
		r.idx[m] = int32(i)
	}
	return r
}

// start returns the ring index of the first member at or after position h.
func (r *memberRing) start(h uint64) int {
	i := sort.Search(len(r.pos), func(i int) bool { return r.pos[i] >= h })
	if i == len(r.pos) {
		i = 0
	}
	return i
}
