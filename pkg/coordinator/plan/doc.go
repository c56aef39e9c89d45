// Package plan is the coordinator leader's decision making, without I/O:
// State is its picture of /topics/, /assign/ and /offsets/ (fed with
// pkg/mirror events), and Planner turns a State into the fenced etcd
// operations that move the stored assignment one step towards what
// pkg/assign computes, following the handover protocol of DESIGN.md.
//
// # Per file, per plan
//
// For each topic with a valid, unpaused config, the desired owner of every
// file is assign.Compute over the live members (heartbeat keys), the files
// they report and the current holders. Then, for each assignment key
// /assign/A/P/f:
//
//   - A has no heartbeat for P (lease gone, or A stopped serving P): the key
//     is deleted (reason owner_gone), since a dead agent cannot release. With
//     Options.OwnerGoneRate the deletions are damped: whole (P, A) pairs, the
//     longest gone first, while a budget of that many files per second lasts
//     (a single agent's are always taken at once); the others keep their
//     keys, so nobody else gets those files yet, and if A comes back they
//     were never touched. Plan counts them (GoneDeferred) and asks to be run
//     again when the budget refills (NextDeadline). With
//     Options.OwnerGoneGrace an agent gone for less than the grace is not
//     counted against the budget at all: its keys wait (GoneInGrace).
//   - the key is revoking: the leader waits for A's release (A deletes the
//     key in the Txn that writes its final offset); after HandoverTimeout
//     it deletes the key itself (reason handover_timeout).
//   - the key is active and A is the desired owner: kept.
//   - otherwise the key is rewritten as revoking, same key, guarded by its
//     create revision so a key just released is never resurrected (reasons
//     rebalance, unreported, topic_removed). Revoking names the next owner.
//
// A file with a desired owner B gets /assign/B/P/f only when no other key
// for f remains after the operations of the same Txn: at once when the only
// other keys are deleted in that Txn (dead owner, timeout), after the
// release otherwise. So a file never has two assignment keys at one
// revision.
//
// # Fencing guards (the executor adds the leader key's guard to every Txn)
//
//   - revoke:  CreateRevision(/assign/A/P/f) == the create revision read;
//   - delete:  the same;
//   - assign:  CreateRevision(/assign/B/P/f) == 0, and == 0 for the key of
//     the previous holder whose release the plan relies on.
//
// Only a leader creates assignment keys and the executor replans only from a
// State that has seen all of the leader's own writes (see pkg/coordinator),
// so "no key for f in State" implies "no key for f in etcd": together with
// the leader guard this is what makes "never two owners" hold; the guards on
// the individual keys catch a State that is behind (an agent's release, an
// operator's hand edit) and make such a write fail instead of doing harm.
//
// # Stability
//
// While a handover to B is under way (and after the release, until B is
// written), the file counts as B's in assign's Current input, so the plan
// does not change its mind half way and a failover-free handover ends where
// the first computation said. assign's results are sticky, so a State whose
// assignment is already what assign computes yields no operations: a
// failover moves nothing.
//
// # Rings and terms
//
// A Planner keeps one assign.Assigner per shared topic, whose consistent ring
// is quadratic to build (most of a minute at 10,000 members). The Planner may
// therefore outlive a term (Reset forgets the rest), and Rings lets a standby
// that follows the State without planning keep the rings in step with the
// members. With
// Options.AsyncRings, Plan never builds or updates a ring: it computes with
// the ring as it stands and returns the rings that lag (Plan.Rings) for the
// caller to sync elsewhere; see assign.Assigner.ComputeNow for what a lagging
// ring changes (the preferred member of files placed meanwhile, never
// validity, the bound or stickiness). Groups of local topics come first in
// Plan.Groups, so their writes never wait behind a shared topic's. Local
// topics have no ring: their files go to the member that sees them.
//
// # Bounded passes
//
// With Options.MaxGroups a pass returns at most that many groups and
// counts the files it left (Plan.Capped); a topic that left any is never
// taken as quiet, so the next pass (woken by this one's writes) plans them.
// A file left out keeps its handover clock running, as a frozen one does.
// Every group stands on its own (see above), and files under way count as
// their next owner's, so the passes that follow compute the same targets
// for the rest unless the members changed meanwhile.
//
// # Bad input
//
// A topic whose config does not decode or validate, or that is paused, is
// frozen: its assignments are left exactly as they are and the error is
// reported. A topic with keys but no config is being removed: its
// assignments are revoked. Keys that do not parse, heartbeats and
// assignments whose values do not decode, and file keys that break the
// naming rules are reported as junk and otherwise ignored; an agent whose
// heartbeat does not decode counts as alive (its key exists) but its files
// are frozen, since what it sees is unknown.
package plan
