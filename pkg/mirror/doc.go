// Package mirror keeps an in-memory copy of etcd key prefixes and reports
// every change to it, level-triggered and exactly once.
//
// Invariants:
//   - The first batch is a snapshot of every prefix at one revision R, read
//     in pages (WithPageSize, 1,000 keys by default): the first page fixes R,
//     every later page is read WithRev(R) from the key after the last one
//     read, so no single request is large however many keys there are. If R
//     is compacted before the last page, the list starts over. Watches start
//     at R+1: nothing between the list and the watch is missed.
//   - Within one prefix, changes reach the handler in revision order.
//   - A broken watch (compacted start revision, cancelled, channel closed)
//     is never resumed: the mirror re-lists at a new revision and hands over
//     the difference between its copy and the new list (a Put for every key
//     added or changed, a Delete for every key gone, keys sorted). A key
//     deleted while the watch was broken is therefore still reported as
//     deleted, and an unchanged key is not reported again.
//   - The re-list diff compares revisions, not values (a value cannot change
//     without its key's ModRevision changing), so with WithoutValues the
//     mirror keeps only each key's revisions and lease, and with
//     WithKeysOnly a prefix is even listed without its values; consumers
//     that decode values keep their own compact form of them.
//   - With WithoutState the mirror keeps nothing: every list, the first and
//     each re-list, is handed over page by page as a new snapshot (Snapshot
//     on its first batch, Partial on all but its last) for the consumer to
//     replace its copy with, and deletes pass through with their key alone.
//     Memory then holds at most one page of a list, not two whole copies.
//   - Watches carry clientv3.WithRequireLeader, so a member cut off from its
//     cluster breaks the watch instead of hanging it silently.
//   - With WithProgressRequests, a Progress batch at revision R is handed
//     over only after every change at or below R under every prefix: it
//     answers a request only once each prefix's watch has had a progress
//     notification since the request (etcd sends one only while every
//     watcher of the stream is in sync, after the events before it, from
//     3.4.25 and 3.5.8 on), or at once, at the current revision, when
//     nothing was written since the list. Such a mirror's watches have a
//     gRPC stream of their own, so nobody else's watch holds the answer
//     back.
//   - Run's goroutines never outlive it.
package mirror
