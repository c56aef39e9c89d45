// Package assign is the coordinator's assignment function: given a topic's
// live members, the files each one reports, whether the topic is shared and
// the assignment currently stored in etcd, it returns the new assignment of
// every file to at most one member. It does no I/O and keeps no state that
// affects results (Assigner only caches the consistent ring).
//
// Assigner.ComputeNow is the one exception, by request: it uses the ring as
// the last Assigner.Sync left it, so that a caller can keep the quadratic
// ring build (consistent v1.0.0) off its critical path and Sync elsewhere.
// While the ring lags the member set, files placed or pulled at that moment
// may go to another member than Compute would choose; every invariant below
// except Determinism still holds, and stickiness means nothing moves when
// the ring catches up.
//
// # Definitions
//
// Members are the distinct, non-empty ids of Input.Members. A member is
// active when it sees at least one file. Files are the distinct non-empty
// keys that active members report; files that only non-members report do not
// exist. A file's eligible members are the active members that report it.
// For a shared topic, N is the number of files, M the number of active
// members (members that see nothing do not count: they cannot take a file),
// and
//
//	cap    = ceil((1+Epsilon) * N / M)   the bound (never below ceil(N/M))
//	avg    = ceil(N / M)                 where new files are placed
//	target = floor(N / M)                what a starved member pulls up to
//
// # Invariants
//
// Validity: a file is assigned only to an eligible member. On a local topic
// a file stays with its current member if that member is still eligible,
// else goes to the eligible member with the smallest id (normally there is
// exactly one); a file whose members are all gone is absent from the result,
// never moved elsewhere. On a shared topic every file with an eligible
// member is assigned.
//
// Bound: on a shared topic no member holds more than cap files whenever an
// assignment within the bound exists; this is always the case when every
// active member sees every file (the usual shared volume). When members see
// different files the bound can be infeasible (say one member is the only
// one to see most files); then the files that cannot fit stay with their
// current member if it is eligible, or go to their least loaded eligible
// member (ties to the smallest id). Validity is never traded for the bound.
//
// Determinism: the result is a function of the inputs' contents only: the
// order of Members and of each Sees slice, duplicates, map iteration order
// and whether Sees slices are shared all make no difference. The leader and
// the standby coordinator compute the same assignment, so a failover moves
// nothing. This requires every coordinator to run the same Config, this
// package's fixed hash (FNV-1a 64 with the murmur3 finalizer) and the same
// version of github.com/buraksezer/consistent (pinned at v1.0.0: v1.0.0
// places virtual nodes differently from v0.10.0).
//
// Stability: assignments are sticky. A valid current assignment is kept
// unless its member is above cap, or the file is pulled by a starved member
// (one holding fewer than target/2 files, typically one that just joined),
// which takes files only from members above target, and only up to target.
// Hence Compute applied to its own result returns it unchanged; a leave
// moves the leaver's files and (almost always) nothing else; a join moves
// about N/M files, all to the new member.
//
// # Algorithm
//
// 1. Keep every valid current assignment.
// 2. Members above cap give files away, first those whose consistent owner
// is another member, to members with room, else along augmenting paths.
// 3. Each unassigned file, in (hash, key) order, goes to its consistent
// owner (LocateKey) if that member is eligible and below avg, else to the
// first eligible member below avg clockwise from the file's hash on a ring
// with one point per member; failing that the same at cap, then an
// augmenting path (a chain of hand-overs ending at a member with room), then
// overflow as above.
// 4. Starved members pull up to target: first files whose consistent owner
// they are, then any file they see, from members above target. Steps 2 and
// 4 alternate until neither moves anything.
//
// consistent's bounded load counts partitions, not files, and its default of
// 271 partitions leaves most members of a large topic without a partition,
// which is why the file-level bound and the member ring walk are done here;
// the consistent ring supplies each file's preferred member.
package assign
