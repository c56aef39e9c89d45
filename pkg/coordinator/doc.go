// Package coordinator is one member of logferry's coordinator HA group:
// it campaigns for leadership (package election) and, while leader, keeps
// /assign/ equal to what pkg/assign computes from /topics/, moving files
// between agents with the handover protocol of DESIGN.md (package plan
// decides; this package reads, writes and reports).
//
// One follower, one State (follower.go). For the whole life of the
// process, whether it leads or not, one mirror lists /topics/, /assign/ and
// /offsets/ at one revision, in pages (/offsets/ keys only), and watches
// them from the next (pkg/mirror keeping nothing, WithRequireLeader); it
// only queues each batch and marks the follower dirty (a channel of
// capacity 1), so it is never held up by a slow plan. The batches build
// one plan.State, applied by whoever holds it: the standby loop while no
// term runs (it also keeps the shared topics' rings in step with their
// members), a term's reconciler while leading. The State passes from one
// to the other and back, never shared: the standby loop has returned
// before a term starts, and starts again when the term has ended. So a
// new term lists nothing (at a million files a list took about a minute)
// and a deposed leader stands by with the State it led from.
//
// Shape of a term. A reconciler wakes on dirty, on the next handover
// deadline or on the status interval, applies the queued batches to the
// State, waits out ReconcileInterval since the end of its last pass (so a
// burst of events, say a thousand agents starting, is handled by one or two
// passes), plans, and writes only the differences, local topics first:
// at most 50,000 files a pass (the rest wait for the next pass, which the
// writes wake), with a pause as long as the last Txn between two Txns so
// that a bulk pass leaves etcd time for lease renewals. Checkpoint changes
// update status counts but never trigger a pass. A compacted or broken
// watch re-lists on its own (pkg/mirror) and is counted; a periodic
// re-list (ResyncInterval, leader and standby) is off unless configured,
// since it repairs nothing the watches miss. The leader also compacts
// etcd's history every CompactInterval, to the revision it saw one
// interval before.
//
// Across terms. The plan.Planner, with each shared topic's consistent ring,
// belongs to the Coordinator, not to a term: a term Resets what only it may
// rely on. Rings are synced by one ring keeper goroutine (rings.go), never
// by a pass beyond a few milliseconds of work: the planner computes with a
// lagging ring meanwhile (AsyncRings), so no topic waits for a ring build;
// local topics have none. Owner-gone deletions are damped by
// OwnerGoneRate, and wait OwnerGoneGrace first if set (see package plan).
//
// Checkpoint lifecycle (retention.go). Between passes, from the State it
// plans from, the reconciler sweeps for checkpoints of gone files (no
// assignment, listed by no live heartbeat; on a local topic the writer is
// live and does not list it, on a shared topic the topic has members) and
// deletes each once it has been gone for CheckpointRetention, within
// CheckpointDeleteRate. Only candidates are remembered, by the term.
//
// Invariants:
//   - Every write of a term is a Txn guarded by the leader key's create
//     revision, at most 128 compares and 128 operations. A checkpoint
//     deletion is guarded as well by the checkpoint's mod revision as read
//     when its clock started and by its writer's assignment key being
//     absent.
//   - A local file's checkpoint is never deleted while the agent that
//     wrote it has no heartbeat under the topic; a shared topic's none
//     while the topic has no live member. A Txn refused with
//     the leader key gone or replaced ends the term at once (election.ErrLost);
//     so does the session ending (the term's context is cancelled).
//   - Read your writes, and the earlier leaders': the reconciler never
//     plans from a State that lacks a write of its own term or of any
//     earlier leader. Earlier leaders' writes all precede the revision
//     at which this term's win was confirmed (their Txns need their own
//     key, deleted before this one could lead), so the first pass waits
//     until the State is shown to hold every change up to that revision:
//     a progress notification from the follower's mirror (answered after
//     every event below it), or, with an etcd release whose notifications
//     can overtake events (before 3.4.25 and 3.5.8) or none within
//     progressTimeout, a fresh list. Each key the term commits stays
//     pending until the mirror shows it (an event at or after the write's
//     revision, or a list or progress notification at or after it), and
//     planning waits meanwhile. Batches are applied by the same goroutine
//     that records pending keys, so none can slip between a Txn and its
//     bookkeeping. A write that fails with an error (outcome unknown)
//     forces a fresh list, made after the failure, before the next plan,
//     in this term or the next. Together with the guards of package plan
//     this keeps every file at most one assignment key at every revision.
//   - The State is never planned from while incomplete (a list whose last
//     page has not been applied), and is touched by one goroutine at a
//     time: the standby loop or a term's reconciler.
//   - A failed per-file guard (etcd changed under the plan: an agent's
//     release, an operator's edit) drops only that file's operations; the
//     others of the Txn are written on their own, and the file is planned
//     again from the fresher state.
//   - Bad input stops nothing: invalid or paused topics are frozen and
//     reported in /status/topics/<P> and the log; junk keys are reported
//     in /status/coordinator and the log, once each.
//   - Status keys are written by the leader only, fenced like assignments,
//     and only when their content changed (and /status/coordinator at
//     least every StatusInterval).
//   - Only a term writes; the follower, the standby loop and the ring
//     keeper write nothing to etcd.
//   - Run's goroutines never outlive it (a ring build is stopped between two
//     members). A clean stop ends the term, then resigns and revokes the
//     lease, so the standby takes over at once.
package coordinator
