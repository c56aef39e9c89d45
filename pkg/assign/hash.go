package assign

// The hash is FNV-1a 64 followed by the murmur3 64-bit finalizer. FNV-1a alone
// mixes the last bytes of a key poorly into the high bits, and the ring sorts
// on all 64 bits; the finalizer fixes the avalanche. Both are fixed
// algorithms, so every coordinator computes the same ring. Changing this
// function changes every assignment computed from scratch (sticky
// assignments survive it, see doc.go) and must be rolled out to all
// coordinators together.

const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

// hashString hashes s without converting it to a byte slice (no allocation).
// It equals hasher{}.Sum64([]byte(s)).
func hashString(s string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime64
	}
	return fmix64(h)
}

// hasher is the consistent.Hasher of the ring. consistent.New panics on a
// nil Hasher, so it is always set.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 {
	h := uint64(fnvOffset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return fmix64(h)
}
