// Package memtarget keeps a process's memory near a target by steering the
// Go runtime's soft memory limit (runtime/debug.SetMemoryLimit).
//
// The collector, left to GOGC alone, lets the heap grow to twice what is
// live before it collects, and returns freed memory to the kernel slowly:
// an agent whose live heap is 40 MiB sits at 90 MiB of RSS, and one that
// had a burst keeps its peak for minutes. With a soft limit at the target
// the collector runs when the process reaches the target, and the
// scavenger returns what is free down to it.
//
// Invariants:
//   - The limit is never below the live heap plus a quarter of it (plus
//     the runtime's memory outside the heap): when the process needs more
//     than the target, the limit follows it up, so the collector never
//     runs back to back (a soft limit under the live heap would make it
//     spend up to half the CPU). The target bounds an idle process, never
//     a busy one.
//   - GOMEMLIMIT in the environment wins: the operator set the limit, and
//     Run leaves it alone.
//   - Only Run changes the limit, and it puts back the one it found when
//     it returns.
package memtarget
