package assign

import "iter"

// Result is a computed assignment, file -> member, kept in the arrays the
// computation built rather than copied into a map: at a million files the
// map cost about 80 MB on every pass. The zero Result (and nil) is empty.
// A Result is read-only and safe for concurrent reads.
type Result struct {
	x      *index
	holder []int32 // file id -> member id, -1 for none
	n      int     // files with a member
}

// Len is the number of files that have a member.
func (r *Result) Len() int {
	if r == nil {
		return 0
	}
	return r.n
}

// Owner returns the member of file, and whether it has one.
func (r *Result) Owner(file string) (string, bool) {
	if r == nil || r.x == nil {
		return "", false
	}
	f := r.x.fileID(file)
	if f < 0 || r.holder[f] < 0 {
		return "", false
	}
	return r.x.names[r.holder[f]], true
}

// All yields every (file, member), in no particular order.
func (r *Result) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		if r == nil || r.x == nil {
			return
		}
		for f, h := range r.holder {
			if h >= 0 && !yield(r.x.keys[f], r.x.names[h]) {
				return
			}
		}
	}
}

// Map returns the assignment as a map.
func (r *Result) Map() map[string]string {
	out := make(map[string]string, r.Len())
	for f, m := range r.All() {
		out[f] = m
	}
	return out
}
