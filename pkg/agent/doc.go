// Package agent is logagent's engine: it follows the topic directories in
// etcd, discovers the matching files on this host, heartbeats under every
// topic it serves, tails the files the coordinator assigned to it into Kafka,
// and checkpoints their offsets in etcd after Kafka acknowledged them.
//
// # Shape
//
// Four parts, each on its own goroutine, exchange levels (whole states),
// never deltas that could be missed:
//
//   - The controller (controller.go) owns the file runs. Its inputs (the
//     topics, the assignments, the inventory's snapshot, tailer exits,
//     release results, runs fenced by the checkpointer, proofs of the
//     lease) only record state and mark it dirty; one reconcile then
//     compares desired (desired.go, a pure function of assignments, topics
//     and snapshot) with the runs and starts, stops or releases tailers.
//     It does no disk or etcd I/O, so it can stop a taken file at once.
//   - A run's state is one value with its transitions in one table
//     (state.go): idle, tailing, parked, finished, gone, releasing,
//     fenced.
//   - The inventory (inventory.go, vanished.go, listing.go, viewindex.go)
//     scans the globs, lists the files the directory watcher holds,
//     remembers files that left the globs, counts lost bytes and writes
//     the heartbeats. It publishes full snapshots to the controller and
//     reads the controller's view of its runs (by topic, through an index
//     of the view when it serves several). A topic's listing is never
//     modified once stored (snapshots and the last heartbeat share it): a
//     scan that found the same files keeps it, and sends the last snapshot
//     again. The held descriptors (held.go) are the one structure both
//     touch, under its own lock.
//   - The checkpointer (checkpoint.go) writes acknowledged offsets every
//     --checkpoint-interval, each Txn under a deadline, and reports runs
//     whose guard failed back to the controller.
//
// Every per-file map is keyed by fileRef, (topic, file key).
//
// # Invariants
//
//   - A checkpoint is the End of a line such that Kafka acknowledged that
//     line and every line before it in the file. Acks may arrive out of
//     order (topic key none); the checkpoint only advances over a contiguous
//     acknowledged prefix. Rejected records (ship.ErrRejected) count as
//     done: they are reported, never retried for ever. Records dropped
//     unwritten (ship.ErrFenced) never count as done: the file is read
//     again from the acknowledged offset.
//   - Every checkpoint and every release is one etcd Txn guarded by the
//     create revision of this agent's own assignment key for the file. A
//     failed guard means the file was taken away: its tailer stops at once
//     and nothing more is written for it.
//   - Self-fencing: nothing goes on the wire unless the lease is proved
//     alive at that moment (the shipper's gate is heartbeat.Registrar.Alive,
//     which runs out a quarter TTL before the server can expire the lease).
//     When the proof runs out the controller stops every tailer, the
//     shipper drops what is not on the wire (Fence), and nothing starts
//     again until a lease is proved and the assignments are read anew; a
//     run whose assignment is unchanged then reads on from what Kafka
//     acknowledged, through the descriptor its tailer kept.
//   - An assignment that turns revoking is released: the tailer stops, the
//     agent waits until Kafka acknowledged everything sent for the file,
//     then writes the final offset and deletes the assignment in one Txn.
//     A release that fails on an etcd error is tried again with the same
//     run, so the final offset is never lost. An assignment that
//     disappears without a revoke mark stops the tailer at once; nothing
//     is written for it afterwards.
//   - The heartbeat of topic P lists the files this host sees for P, plus
//     every file that was rotated out of the globs and is not shipped to
//     its end: those this agent still tails (and, once finished, for a
//     checkpoint interval and two scans more), and those it saw under the
//     globs, or knows from a checkpoint, and finds by identity while their
//     checkpoint does not cover their size. So such a file always has an
//     agent to go to: its owner dying or a handover cut short by a leader
//     failover cannot orphan it.
//   - A file the directory watcher found is held open from the watcher's
//     own goroutine until a run takes the descriptor (or for at most a
//     minute), so it is read even if it lost every name before its
//     assignment arrived.
//   - Lost bytes are counted once per file, whoever notices, and only from
//     a checkpoint that could be read.
//   - Start-up reads on a local topic with a state file are this agent's
//     own: the state file and the checkpoints of its own assignments,
//     never the topic's checkpoints (every host's, and their history).
//   - A file never shipped before that starts with the first bytes of a
//     file being read here (copies.go) starts at that file's acknowledged
//     offset once that file is truncated within copyWait (copytruncate),
//     else at its own start: nothing is shipped twice under two keys.
//   - A short file's identity (pkg/fileid) is saved in the state file
//     before any line of it is shipped, and given back to the scanner at
//     start-up and from the checkpoints; a run whose identity the scanner
//     has since replaced for the same file (rewritten) does not start.
//   - A parked file (quiet for --close-inactive, park.go) has no
//     goroutine, no buffer and no watch of its own: only its descriptor,
//     its run and its registration with the directory watcher. It is
//     registered before the last check that it did not change since its
//     tailer's last read, so a write is never left unread: any write,
//     rename or delete at its path wakes it (the scans do where the
//     directory watch does not reach), and its tailer starts again from
//     the acknowledged offset through the descriptor it kept.
//   - At most --max-starting-files tailers are catching up (started, not
//     yet at their file's end) at once (starts.go); the others wait in a
//     queue, idle, and each slot given back starts the next. While any
//     waits, a current file read to its end parks at once (unless written
//     in the last second). The queue never stalls with free slots: a slot
//     given back is reserved for the next run waiting, and a reserved run
//     the reconcile does not start gives it back at once.
//   - The checkpointer looks only at runs marked dirty (an ack, a size, a
//     state change marked them) and keeps marked those with a checkpoint
//     still due; a run nobody marked has nothing to write.
//   - A clean stop stops every tailer, waits (bounded by --stop-timeout) for
//     the releases and Kafka's acks, writes final checkpoints, and revokes
//     the lease: at most --stop-timeout + 3 s, whatever etcd and Kafka do.
package agent
