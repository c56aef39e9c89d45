// Package statefile keeps an agent's checkpoints on the host's own disk:
// the local tier of the agent's two-tier checkpoints.
//
// The agent saves every acknowledged offset here every
// --checkpoint-interval (one file, written whole), and writes etcd only at
// a coarse interval. After a restart on the same host it resumes from
// here, so a crash repeats at most one --checkpoint-interval of lines,
// while etcd's write rate no longer grows with files / interval.
//
// Invariants:
//   - A save is atomic and durable: the state is written to a temporary
//     file in the same directory, fsynced, renamed over the old one, and
//     the directory is fsynced. A crash leaves the old state or the new
//     one, never a mix.
//   - Reading is strict (unknown fields and trailing data refused) and
//     versioned; an unreadable file is an error that names it. It is never
//     silently treated as empty, since that would re-ship every file.
//   - Only this agent reads its file. Other agents never see it, so an
//     offset saved here after a file was taken away cannot mislead the
//     file's new owner: fencing stays with etcd.
package statefile
