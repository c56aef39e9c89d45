// Package protocol defines the JSON values that logferry's roles exchange
// through etcd: agent heartbeats (/topics/<P>/<agent>), assignments
// (/assign/<agent>/<P>/<file>), checkpoints (/offsets/<P>/<file>) and status
// values (/status/...). Keys are pkg/keyspace's business; values are this
// package's.
//
// Invariants:
//   - Every value carries a format version V; a reader rejects a version it
//     does not know instead of misreading it.
//   - Decoding is strict (unknown fields rejected), so a value written by a
//     newer, incompatible writer is noticed, not half-understood.
//   - An assignment's state changes from active to revoking in place (its
//     create revision stays), which is what the handover protocol and the
//     fencing of checkpoints rely on.
package protocol
