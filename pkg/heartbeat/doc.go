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
//     after a random wait of up to a TTL (so a fleet that lost its leases
//     together does not come back together), with capped exponential
//     backoff on failures, and every key is written again.
//   - A clean stop revokes the lease, so the keys disappear at once instead
//     of after the TTL.
//   - Lease() is non-zero only while a lease is held, proved alive, and
//     every desired key is written on it (readiness).
//   - AliveUntil never runs past the lease on the server. The registrar
//     renews the lease itself (KeepAliveOnce every quarter TTL, rather than
//     the client's background stream, whose answers cannot be matched to
//     the time they were asked), and proves it alive until the time the
//     answered renewal was sent plus the TTL etcd answered with, minus a
//     quarter TTL. The server cannot expire the lease before that, so a
//     holder that stops acting when Alive turns false (the agent's
//     self-fencing) stops before anyone can see its keys vanish.
//   - No call to etcd waits longer than a TTL, so an unreachable etcd is
//     logged with its endpoints, reported by Err, and never delays a stop.
package heartbeat
