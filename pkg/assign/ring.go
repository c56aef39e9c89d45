package assign

import (
	"slices"
	"sort"

	"github.com/buraksezer/consistent"
)

// ringMember is a member of the consistent ring.
type ringMember string

func (m ringMember) String() string { return string(m) }

// syncRing brings a.ring to the member set names (sorted, distinct) and
// returns the partition owner table: partition -> member id in x, or -1.
// The caller holds a.mu.
//
// consistent v1.0.0 re-sorts its whole ring on every member it adds, so
// consistent.New costs O(members^2 * ReplicationFactor): about 0.7 s for
// 1,000 members and 50 s for 10,000 (RF 20). The Assigner therefore keeps
// the ring between calls and applies membership changes with Add and Remove
// (O(members * ReplicationFactor) each). consistent's partition table
// depends only on the member set, not on the order of Add and Remove, so the
// cached ring equals a freshly built one (TestRingIncrementalEqualsFresh),
// barring a 64-bit hash collision between two virtual nodes, where
// consistent's ring map keeps whichever member was added last.
func (a *Assigner) syncRing(x *index) []int32 {
	names := x.names
	var adds, removes []string
	if a.ring != nil {
		for m := range a.inRing {
			if _, ok := x.ix[m]; !ok {
				removes = append(removes, m)
			}
		}
		for _, m := range names {
			if _, ok := a.inRing[m]; !ok {
				adds = append(adds, m)
			}
		}
	}
	cfg := consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    a.cfg.PartitionCount,
		ReplicationFactor: a.cfg.ReplicationFactor,
		Load:              1 + a.cfg.Epsilon, // >= 1: consistent panics below 1
	}
	switch {
	case a.ring == nil || 2*(len(adds)+len(removes)) > len(names):
		// New costs about as much as len(names)/2 Adds.
		ms := make([]consistent.Member, len(names))
		a.inRing = make(map[string]struct{}, len(names))
		for i, m := range names {
			ms[i] = ringMember(m)
			a.inRing[m] = struct{}{}
		}
		a.ring = consistent.New(ms, cfg)
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
	}
	owners := make([]int32, a.cfg.PartitionCount)
	for p := range owners {
		owners[p] = -1
		if m := a.ring.GetPartitionOwner(p); m != nil {
			if id, ok := x.ix[m.String()]; ok {
				owners[p] = id
			}
		}
	}
	return owners
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
