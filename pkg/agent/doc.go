// Package agent is logagent's engine: it follows the topic directories in
// etcd, discovers the matching files on this host, heartbeats under every
// topic it serves, tails the files the coordinator assigned to it into Kafka,
// and checkpoints their offsets in etcd after Kafka acknowledged them.
//
// Invariants:
//   - A checkpoint is the End of a line such that Kafka acknowledged that
//     line and every line before it in the file. Acks may arrive out of
//     order (topic key none); the checkpoint only advances over a contiguous
//     acknowledged prefix. Rejected records (ship.ErrRejected) count as
//     done: they are reported, never retried for ever.
//   - Every checkpoint and every release is one etcd Txn guarded by the
//     create revision of this agent's own assignment key for the file. A
//     failed guard means the file was taken away: its tailer stops at once
//     and nothing more is written for it.
//   - An assignment that turns revoking is released: the tailer stops, the
//     agent waits until Kafka acknowledged everything sent for the file,
//     then writes the final offset and deletes the assignment in one Txn.
//     An assignment that disappears without a revoke mark stops the tailer
//     at once; nothing is written for it afterwards.
//   - The heartbeat of topic P lists the files this host sees for P, plus
//     every file that was rotated out of the globs and is not shipped to
//     its end: those this agent still tails (and, once finished, for a
//     checkpoint interval and two scans more), and those it saw under the
//     globs, or knows from a checkpoint, and finds by identity while their
//     checkpoint does not cover their size. So such a file always has an
//     agent to go to: its owner dying or a handover cut short by a leader
//     failover cannot orphan it.
//   - A file the directory watcher found is held open until its tailer
//     takes the descriptor (or for at most a minute), so it is read even if
//     it lost every name before its assignment arrived.
//   - A clean stop stops every tailer, waits (bounded) for Kafka's acks,
//     writes final checkpoints, and revokes the lease.
//   - One control goroutine owns the maps of topics, files and assignments;
//     tailers and Kafka ack callbacks only touch their own fileRun, under its
//     lock.
package agent
