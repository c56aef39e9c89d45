// Command fleetsim is logferry's fleet simulator (`make scale`): it measures
// what the real coordinator pair and a real etcd do with thousands of
// agents and up to a million files, on one machine.
//
// What runs. An etcd server (embedded, internal/devstack, unless
// --etcd-endpoints names an external one); the real coordinator binary
// (--bin) as two processes, coord-1 and coord-2; and N simulated agents in
// this process. Each agent holds its own lease through the real
// pkg/heartbeat Registrar (kept alive, re-granted and rewritten after a
// loss, revoked on stop) carrying its /status/agents/<agent> key and its
// heartbeats: the exact protocol.Heartbeat JSON for the local topic
// "simlocal" (--files files, all its own) and the shared topic "simshared"
// (--shared-files files, each seen by --shared-replicas agents). File keys,
// paths and identities are made up but valid per pkg/keyspace, and
// decodable, so the simulator keeps a few bytes per file. Agents follow
// their assignments through one mirror (pkg/mirror) of /assign/ that
// dispatches to them (a watch per agent would be 10,000 watches), release
// revoking assignments as the agent does, and in the checkpoint scenario
// write checkpoints as the agent does. What an agent does is in agent.go
// only, the checkpoint model included (flags --checkpoint-*), so that the
// simulator follows the agent when its design changes.
//
// Scenarios (--scenarios), in this order, each from the state the one
// before left:
//   - cold-local: both coordinators start against a fleet that already
//     heartbeats the local topic: time to a leader, to every file assigned.
//   - cold-shared: the shared topic is written and every agent reports its
//     shared files: time until every one is assigned.
//   - failover: kill -9 of the leader; a newcomer agent joins right after:
//     time until the standby leads (election key), until the newcomer's
//     files are assigned, and assignments moved (must be 0: the set of
//     assignment keys and create revisions before and after is compared).
//   - join: --join-share more agents within one second: time until their
//     files are assigned and the leader settled.
//   - revoke: --revoke-share of the agents' leases revoked at once: what
//     the leader deletes, recreates and moves, and when it settles.
//   - checkpoint: every file checkpoints for --duration: keys/s asked and
//     achieved, Txn latency p50/p99, agent leases lost.
//   - idle: --duration with nothing changing: the leader's CPU.
//
// Throughout, a sampler reads etcd every --sample-interval (revision, for
// write Txns/s; Maintenance Status DbSize; the mvcc put and delete counters
// of its /metrics, for keys/s), the leader process (/proc/<pid>/stat
// CPU, VmRSS and VmHWM from /proc/<pid>/status) and the other
// coordinator's memory (the standby holds the same state); each
// scenario's table ends with what they did during it.
//
// "Settled" means every agent holds its lease with its keys written, every
// file is assigned, nothing is revoking, and the leader's
// /status/coordinator, from a pass that started after the scenario's
// change, counts every member and file with no handover pending (the
// coordinators run with --status-interval 1s for this; see settle.go).
// A scenario that does not get there within
// --converge-timeout fails, as does a failover that moved an assignment;
// fleetsim then exits 1 and keeps its working directory (the
// coordinators' logs). Figures on a shared machine are noisy: the
// simulator, etcd and both coordinators share its cores.
package main
