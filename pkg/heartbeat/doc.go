// Package heartbeat holds an agent's presence in etcd: one lease per agent,
// kept alive, with a set of keys written on it (the agent's heartbeat under
// every topic it serves, /topics/<P>/<agent>, and its status,
// /status/agents/<agent>).
//
// Invariants:
//   - Every desired key is written on the current lease, and only there:
//     when the agent dies, the lease expires and all its keys vanish together,
//     which is how the coordinator learns the agent is gone.
//   - A key is written when its desired value changes, never on keepalives,
//     so watchers see a change only when something changed.
//   - A lost lease (expired, revoked, keepalives unanswered for a TTL, etcd
//     down for longer than the TTL) is never revived: a new lease is granted
//     with capped exponential backoff and every key is written again.
//   - A clean stop revokes the lease, so the keys disappear at once instead
//     of after the TTL.
//   - Lease() is non-zero only while a lease is held and every desired key
//     is written on it (readiness).
package heartbeat
