package assign

import (
	"context"
	"fmt"
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
	// Cold is set when the ring was built from scratch: the first Sync, or
	// one that changes more than half the members.
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
// reads the partition table of the last completed Sync. A cold build adds
// the members one at a time (consistent.New does the same, with the same
// sort per member), so that ctx can stop it between two: Sync then returns
// ctx's error, keeps the members added so far for the next Sync, and
// leaves the table of the last completed Sync in place.
func (a *Assigner) Sync(ctx context.Context, members []string) (SyncStats, error) {
	st, _, err := a.sync(ctx, members)
	return st, err
}

// sync is Sync, also returning the table it leaves for members (nil on
// error), which a concurrent Sync may replace as soon as it returns.
func (a *Assigner) sync(ctx context.Context, members []string) (SyncStats, *ringTable, error) {
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
			if !a.InSync(members) {
				a.publish(members) // a cancelled Sync finished by this one
			}
			return st, a.table.Load(), nil
		}
	}
	if a.ring == nil || 2*(len(adds)+len(removes)) > len(members) {
		// Starting afresh costs about as much as len(members)/2 Adds.
		a.ring = consistent.New(nil, consistent.Config{
			Hasher:            hasher{},
			PartitionCount:    a.cfg.PartitionCount,
			ReplicationFactor: a.cfg.ReplicationFactor,
			Load:              1 + a.cfg.Epsilon, // >= 1: consistent panics below 1
		})
		a.inRing = make(map[string]struct{}, len(members))
		adds, removes = members, nil
		st.Cold = true
	}
	slices.Sort(removes)
	for _, m := range removes {
		a.ring.Remove(m)
		delete(a.inRing, m)
		st.Removed++
	}
	for _, m := range adds {
		if err := ctx.Err(); err != nil {
			st.Took = time.Since(start)
			return st, nil, fmt.Errorf("assign: ring sync stopped after %d of %d members: %w", st.Added, len(adds), err)
		}
		a.ring.Add(ringMember(m))
		a.inRing[m] = struct{}{}
		st.Added++
	}
	t := a.publish(members)
	st.Took = time.Since(start)
	return st, t, nil
}

// TrySync Syncs the ring to members only if that is cheap: no other Sync
// is running and the work, counted as members changed times ring size (a
// cold build as half the ring size squared), is at most maxWork. A unit is
// one member's share of one of consistent's re-sorts: 10,000 units are
// about 10 ms. It reports whether the ring is in sync afterwards.
func (a *Assigner) TrySync(members []string, maxWork int) (SyncStats, bool) {
	if a.InSync(members) {
		return SyncStats{}, true
	}
	if !a.syncMu.TryLock() {
		return SyncStats{}, false
	}
	work := len(members) * len(members) / 2
	if a.ring != nil {
		changes := 0
		for m := range a.inRing {
			if _, ok := slices.BinarySearch(members, m); !ok {
				changes++
			}
		}
		for _, m := range members {
			if _, ok := a.inRing[m]; !ok {
				changes++
			}
		}
		if 2*changes <= len(members) {
			work = changes * len(members)
		}
	}
	a.syncMu.Unlock()
	if work > maxWork {
		return SyncStats{}, false
	}
	// Another Sync may start in between; this one then waits for it, which
	// is rare and bounded by what that one does.
	st, err := a.Sync(context.Background(), members)
	return st, err == nil
}

// publish makes the ring's partition table, for members, the one ComputeNow
// reads. The caller holds syncMu.
func (a *Assigner) publish(members []string) *ringTable {
	t := &ringTable{members: slices.Clone(members), owners: make([]string, a.cfg.PartitionCount)}
	for p := range t.owners {
		if m := a.ring.GetPartitionOwner(p); m != nil {
			t.owners[p] = m.String()
		}
	}
	a.table.Store(t)
	return t
}

// owners maps the last synced partition table onto x: partition -> member
// id in x, or -1 when the partition's member is not one of x's (or no ring
// was synced yet). Files of such partitions are placed by the member ring
// walk (findRoom), like those of a member that is full.
func (a *Assigner) owners(x *index) []int32 { return a.ownersFrom(a.table.Load(), x) }

func (a *Assigner) ownersFrom(t *ringTable, x *index) []int32 {
	owners := make([]int32, a.cfg.PartitionCount)
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
	_, t, _ := a.sync(context.Background(), x.names) // no error without a deadline
	return a.ownersFrom(t, x)
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
