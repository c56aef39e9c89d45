package testenv

import "runtime"

// Allocated runs f n times and returns how many heap allocations and bytes
// the process made meanwhile (every goroutine's: keep others quiet). Unlike
// testing.AllocsPerRun it does not round down to whole allocations per run,
// so a rare reallocation still counts.
func Allocated(n int, f func()) (allocs, bytes uint64) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs, after.TotalAlloc - before.TotalAlloc
}

// HeapAfterGC is the live heap after two collections: what a benchmark
// compares before and after building a structure to measure what it keeps.
func HeapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
