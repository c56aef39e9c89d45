// Package mirror keeps an in-memory copy of etcd key prefixes and reports
// every change to it, level-triggered and exactly once.
//
// Invariants:
//   - The first batch is a snapshot of every prefix read in one Txn, so at
//     one revision R. Watches start at R+1: nothing between the list and the
//     watch is missed.
//   - Within one prefix, changes reach the handler in revision order.
//   - A broken watch (compacted start revision, cancelled, channel closed)
//     is never resumed: the mirror re-lists at a new revision and hands over
//     the difference between its copy and the new list (a Put for every key
//     added or changed, a Delete for every key gone, keys sorted). A key
//     deleted while the watch was broken is therefore still reported as
//     deleted, and an unchanged key is not reported again.
//   - Watches carry clientv3.WithRequireLeader, so a member cut off from its
//     cluster breaks the watch instead of hanging it silently.
//   - Run's goroutines never outlive it.
package mirror
