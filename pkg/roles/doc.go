// Package roles defines the etcd roles logferry's components run under and
// applies them to a cluster. etcd grants permissions on key ranges
// [key, range_end), so each role is a list of ranges computed from the key
// space (pkg/keyspace, which honours --etcd-prefix) and, for the agents, the
// topic directories that exist.
//
// The roles, with what each component's code reads, writes and deletes:
//
//   - logferry-agent, shared by every agent: read /topics/ (topic configs,
//     watched, and heartbeats); read and write [/topics/P/, /topics/P0) for
//     each topic P, which holds P's heartbeats and not P's config key
//     /topics/P itself; read and write /offsets/ (checkpoints read when a
//     file is resumed or a topic is scanned, written in Txns guarded by the
//     assignment); read the key /status/coordinator (the fleet's file count,
//     which sizes the etcd checkpoint interval).
//   - logferry-agent-<id>, one per agent: read and write /assign/<id>/ (the
//     agent watches its assignments and deletes one to release it, in the
//     Txn that writes the final checkpoint) and the key /status/agents/<id>.
//     etcd has no delete-only permission, so "write" is what deleting needs.
//   - logferry-coordinator: read /topics/; read and write /offsets/ (the
//     leader deletes the checkpoints of files gone for
//     --checkpoint-retention; it never puts one), /assign/ (assignments,
//     revocations, deletions after a handover timeout),
//     /coordinator/election/ (concurrency.Election), /status/topics/ and
//     the key /status/coordinator.
//   - logferry-operator, for logctl and people: read and write /topics/
//     (topic configs) and /assign/ (to remove a stuck assignment by hand);
//     read /offsets/, /status/ and /coordinator/.
//
// Invariants: Apply converges: it adds missing roles, grants missing ranges
// and revokes ranges a role should not have, so running it again changes
// nothing. Leases need no permission in etcd, but revoking one needs write
// permission on every key attached to it, which each role has for its own
// keys. Nothing here can grant etcd's compaction, which etcd reserves to the
// root role.
package roles
