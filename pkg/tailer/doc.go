// Package tailer follows one log file by identity and hands out its lines
// with exact byte offsets.
//
// It wraps github.com/nxadm/tail, and makes up for what that library gets
// wrong (docs/architecture.md lists it): nxadm/tail follows appends through the
// path, but the tailer owns identity, rotation and truncation.
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
//   - Lines from nxadm/tail are used only when they continue exactly at the
//     tailer's offset; anything else (a reopen after truncation) hands
//     control back to the descriptor.
//   - A file that shrinks below the offset is read again from 0 if its first
//     bytes are unchanged (plain truncation); if they changed, its identity is
//     gone (ErrGone) and the new content is a new file for discovery.
//   - A line's Data is valid only while emit runs: the tailer reuses its
//     buffer. Before it waits for more (and before Run returns) it calls
//     Config.Flush, so a sink that gathers lines never holds them back.
//   - Memory per tailer is bounded by max line bytes plus a 64 KiB buffer on
//     the descriptor path. nxadm/tail itself holds a whole line in memory
//     while following, so one huge line costs its length once.
package tailer
