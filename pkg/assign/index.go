package assign

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"strings"
)

// view is a set of members that see exactly the same files. In the common
// shared topic (one volume mounted everywhere) there is a single view holding
// every member, which makes the work O(members + files) instead of
// O(members * files).
type view struct {
	members []int32 // active member indices, ascending
	n       int     // number of files the view sees
	full    bool    // holds every active member
	bits    []uint64
	files   []int32 // the view's files in file order; nil when there is one view
}

// index is the normalised input: deduplicated, sorted, with dense ids.
//
// Members: only "active" ones are indexed, i.e. listed in Input.Members and
// seeing at least one file; ids follow name order. Files: the union of what
// active members see; ids follow (hash, key) order, which is the order every
// phase visits files in. No step depends on input order or map iteration.
type index struct {
	names  []string
	ix     map[string]int32
	viewOf []int32 // member -> view
	views  []view

	keys []string // file id -> key
	hash []uint64 // file id -> hashString(key), ascending

	// fvStart/fvList: file -> views seeing it (ascending), CSR layout;
	// nil when there is a single view.
	fvStart []int32
	fvList  []int32
	one     [1]int32
}

// viewsOf returns the views that see file f, in ascending order.
func (x *index) viewsOf(f int32) []int32 {
	if x.fvStart == nil {
		return x.one[:]
	}
	return x.fvList[x.fvStart[f]:x.fvStart[f+1]]
}

// eligible reports whether member m sees file f.
func (x *index) eligible(m, f int32) bool {
	v := x.viewOf[m]
	for _, w := range x.viewsOf(f) {
		if w == v {
			return true
		}
	}
	return false
}

// fileID returns the id of a file key by binary search, or -1 if no active
// member sees it.
func (x *index) fileID(key string) int32 {
	h := hashString(key)
	i := sort.Search(len(x.hash), func(i int) bool {
		return x.hash[i] > h || x.hash[i] == h && x.keys[i] >= key
	})
	if i < len(x.keys) && x.keys[i] == key {
		return int32(i)
	}
	return -1
}

// viewFiles returns the files of view v in file order, or nil when the view
// sees every file (callers then iterate file ids directly).
func (x *index) viewFiles(v int32) []int32 {
	if x.views[v].n == len(x.keys) {
		return nil
	}
	return x.views[v].files
}

// sliceID identifies a Sees slice by its backing array and length, so that
// a caller passing the same slice for many members pays for it once.
type sliceID struct {
	p *string
	n int
}

// ent is one (file key, view) pair while indexing: the key is src[v][k].
type ent struct {
	h uint64
	k int32
	v int32
}

func buildIndex(in Input) (*index, error) {
	live := make([]string, 0, len(in.Members))
	for _, m := range in.Members {
		if m != "" {
			live = append(live, m)
		}
	}
	slices.Sort(live)
	live = slices.Compact(live)

	x := &index{ix: make(map[string]int32)}
	var (
		src     [][]string // view -> the Sees slice it was first built from
		ents    [][]ent    // view -> its distinct files, sorted by (hash, key)
		tmp     []ent
		bySlice = make(map[sliceID]int32)
		bySig   = make(map[uint64][]int32)
	)
	attach := func(v int32, name string) {
		id := int32(len(x.names))
		x.ix[name] = id
		x.names = append(x.names, name)
		x.viewOf = append(x.viewOf, v)
		x.views[v].members = append(x.views[v].members, id)
	}
	for _, name := range live {
		s := in.Sees[name]
		if len(s) == 0 {
			continue
		}
		if len(s) >= math.MaxInt32 {
			return nil, ErrTooManyFiles
		}
		sid := sliceID{&s[0], len(s)}
		if v, ok := bySlice[sid]; ok {
			if v >= 0 {
				attach(v, name)
			}
			continue
		}
		es := make([]ent, 0, len(s))
		for i, k := range s {
			if k != "" {
				es = append(es, ent{h: hashString(k), k: int32(i)})
			}
		}
		keyOf := func(e ent) string { return s[e.k] }
		tmp = sortEnts(es, tmp, keyOf)
		es = slices.CompactFunc(es, func(a, b ent) bool { return a.h == b.h && s[a.k] == s[b.k] })
		if len(es) == 0 {
			bySlice[sid] = -1
			continue
		}
		// A member reporting the same set as an earlier one (in any order,
		// with any duplicates) joins its view: interning is an optimisation,
		// never a change of result.
		sig := uint64(len(es))
		for _, e := range es {
			sig = fmix64(sig ^ e.h)
		}
		match := int32(-1)
		for _, c := range bySig[sig] {
			if slices.EqualFunc(ents[c], es, func(a, b ent) bool { return a.h == b.h && src[c][a.k] == s[b.k] }) {
				match = c
				break
			}
		}
		if match < 0 {
			match = int32(len(x.views))
			x.views = append(x.views, view{n: len(es)})
			src = append(src, s)
			ents = append(ents, es)
			bySig[sig] = append(bySig[sig], match)
		}
		bySlice[sid] = match
		attach(match, name)
	}
	for v := range x.views {
		x.views[v].full = len(x.views[v].members) == len(x.names)
	}

	switch len(x.views) {
	case 0:
	case 1:
		es := ents[0]
		x.keys = make([]string, len(es))
		x.hash = make([]uint64, len(es))
		for f, e := range es {
			x.keys[f], x.hash[f] = src[0][e.k], e.h
		}
	default:
		// Union of the views by a merge on (hash, key, view).
		total := 0
		for _, es := range ents {
			total += len(es)
		}
		all := make([]ent, 0, total)
		for v, es := range ents {
			for _, e := range es {
				e.v = int32(v)
				all = append(all, e)
			}
			x.views[v].files = make([]int32, 0, len(es))
		}
		keyOf := func(e ent) string { return src[e.v][e.k] }
		sortEnts(all, tmp, keyOf)
		// At most total distinct files: sized once, not grown by doubling
		// (at a million files the growth alone allocated over 100 MB).
		x.fvStart = make([]int32, 1, total+1)
		x.fvList = make([]int32, 0, total)
		x.keys = make([]string, 0, total)
		x.hash = make([]uint64, 0, total)
		for i, e := range all {
			if i == 0 || e.h != all[i-1].h || keyOf(e) != keyOf(all[i-1]) {
				if len(x.keys) >= math.MaxInt32-1 {
					return nil, ErrTooManyFiles
				}
				if i > 0 {
					x.fvStart = append(x.fvStart, int32(len(x.fvList)))
				}
				x.keys = append(x.keys, keyOf(e))
				x.hash = append(x.hash, e.h)
			}
			f := int32(len(x.keys) - 1)
			x.fvList = append(x.fvList, e.v)
			x.views[e.v].files = append(x.views[e.v].files, f)
		}
		x.fvStart = append(x.fvStart, int32(len(x.fvList)))
	}
	return x, nil
}

// sortEnts sorts es by (hash, key, view) and returns the scratch buffer for
// reuse. Large inputs use an LSD radix sort on the hash (the 1M-file case
// spends most of its indexing time sorting); runs of equal hashes, which
// are duplicates or 64-bit collisions, are then ordered by key and view.
func sortEnts(es, tmp []ent, keyOf func(ent) string) []ent {
	if len(es) < 2048 {
		slices.SortFunc(es, func(a, b ent) int { return cmp.Compare(a.h, b.h) })
	} else {
		if cap(tmp) < len(es) {
			tmp = make([]ent, len(es))
		}
		tmp = tmp[:len(es)]
		a, b := es, tmp
		for shift := uint(0); shift < 64; shift += 8 {
			var count [256]int
			for _, e := range a {
				count[byte(e.h>>shift)]++
			}
			if count[byte(a[0].h>>shift)] == len(a) {
				continue // every hash has the same digit here
			}
			pos := 0
			for d, c := range count {
				count[d] = pos
				pos += c
			}
			for _, e := range a {
				d := byte(e.h >> shift)
				b[count[d]] = e
				count[d]++
			}
			a, b = b, a
		}
		if &a[0] != &es[0] {
			copy(es, a)
		}
	}
	for i := 0; i < len(es); {
		j := i + 1
		for j < len(es) && es[j].h == es[i].h {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(es[i:j], func(a, b ent) int {
				if c := strings.Compare(keyOf(a), keyOf(b)); c != 0 {
					return c
				}
				return cmp.Compare(a.v, b.v)
			})
		}
		i = j
	}
	return tmp
}
