// Package protocol defines the JSON values that logferry's roles exchange
// through etcd: agent heartbeats (/topics/<P>/<agent>), assignments
// (/assign/<agent>/<P>/<file>), checkpoints (/offsets/<P>/<file>) and status
// values (/status/...). Keys are pkg/keyspace's business; values are this
// package's.
//
// Invariants:
//   - Values are forward compatible, so a fleet can be upgraded host by host
//     with old and new builds reading each other's values: a reader ignores
//     fields it does not know, and a writer adds fields only when every
//     reader can do without them (an old reader simply does not see them).
//   - Every value carries a format version V, which changes only for an
//     incompatible change (a field removed, renamed, or given a new type or
//     meaning). A reader refuses a V it does not know instead of misreading
//     it; such a change needs the upgrade procedure that docs/operations.md
//     describes for it, never a plain rolling upgrade.
//   - Fields this build knows must still decode to their type: a value whose
//     known fields are wrong is refused, with its key in the error.
//   - Topic configs are not this package's: people write them, and
//     pkg/topics decodes them strictly.
//   - An assignment's state changes from active to revoking in place (its
//     create revision stays), which is what the handover protocol and the
//     fencing of checkpoints rely on.
package protocol
