// Package election runs the coordinators' leader election: a
// concurrency.Election under /coordinator/election/ whose candidates put
// their --id on a lease of --lease-ttl, and the leader's term.
//
// Invariants:
//   - A term starts only after Campaign returned AND a Txn confirmed that the
//     candidate's key still exists with the create revision Campaign
//     reported. Campaign does not notice its own session expiring while it
//     waits (etcd issues 11051, 19597) and can return nil with no key held;
//     it is therefore raced against the session's Done(), and its result is
//     checked.
//   - The term's context is cancelled the moment the session ends (lease
//     expired or revoked, keepalives unanswered, client closed) or Run's
//     context is done; the term function must stop all leader work when it
//     is. Whatever the term does, every write it makes is fenced by
//     Leadership.Guard, so a term that has not yet noticed the loss fails
//     its writes instead of racing the next leader.
//   - Role() reports RoleLeader only between the confirmation above and the
//     term function's return, and the leader key is deleted (Resign) only
//     after that return: a clean stop hands leadership over at once, never
//     with two terms running in this process or, through the fence, in etcd.
//   - Every round uses a fresh session; a session is never reused after a
//     term or a lost lease, and it is revoked when the round ends, so a
//     stopped or deposed candidate leaves no key behind.
//   - Run's goroutines never outlive it.
package election
