// Package tailer follows one log file by identity and hands out its lines
// with exact byte offsets.
//
// It reads the file itself, through its own descriptor, and uses
// github.com/nxadm/tail for one thing only: change notification (the
// library's watch package, an inotify watch or a stat poll), made on the
// tailer's own descriptor (/proc/self/fd/<n>) rather than on the path, so
// that two tailers never share a watch. docs/architecture.md lists what
// the rest of that library gets wrong and why it is not used.
//
// Invariants:
//   - Lines are emitted in file order; each carries Start (the offset of its
//     first byte) and End (where reading resumes). Consecutive lines are
//     contiguous: a line's Start is the previous line's End, so a checkpoint
//     at any End neither repeats nor skips a byte.
//   - Only complete lines are emitted while the file is current. An
//     unfinished last line is emitted, flagged NoNewline, only once the
//     file was rotated away or deleted and stopped growing.
//   - The tailer keeps its own descriptor of the file from start to finish.
//     After a rename or delete it reads that descriptor to the end of the
//     file (and on while a writer still appends, until the file has been
//     idle for RotatedIdle) before it returns ErrFinished: a rotated file is
//     never let go of early, whatever nxadm/tail noticed or missed.
//   - Every byte is read through the tailer's descriptor. A notification
//     only wakes the tailer; a lost one costs at most one check interval
//     (CheckInterval, doubling while the file is quiet up to 8 times it),
//     after which the tailer reads whatever is there.
//   - A file that shrinks below the offset is read again from 0 if its first
//     bytes are unchanged (plain truncation); if they changed, its identity is
//     gone (ErrGone) and the new content is a new file for discovery.
//   - A line's Data is valid only while emit runs: the tailer reuses its
//     buffer. Before it waits for more (and before Run returns) it calls
//     Config.Flush, so a sink that gathers lines never holds them back.
//   - Memory per tailer is bounded by max line bytes (the pending part of
//     a long line, held until a part is full) plus a 64 KiB read buffer,
//     whatever the length of a line: a line of a GiB without a newline is
//     emitted in parts as it is read, never held whole.
//   - With Config.Inactive set, a current file that has not grown for
//     that long (or, at once, one read to its end when Config.AtEnd says
//     so and no last line without newline is pending) ends Run with
//     ErrInactive, every complete line emitted and the descriptor handed
//     to Keep: the caller parks the file and runs a
//     tailer again when it changes. ReadEnd tells how much was read, an
//     unfinished last line included, so that the caller can tell a change
//     from the state the tailer left.
//   - The read buffer is borrowed from a pool of the process for one read
//     (from the offset to the end of the file) and given back before the
//     tailer waits: a tailer waiting for its file to grow holds no read
//     buffer, and no line buffer unless a line is unfinished. At most 64
//     are lent at once in the process (4 MiB): a tailer waits for one, so
//     thousands of files read at once (an agent's start) do not hold a
//     buffer each.
package tailer
