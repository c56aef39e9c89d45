package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// TestCheckpointManyFilesAndFencing drives the checkpointer directly:
// 300 files (more than one Txn's 128 operations) are written, and a file
// whose assignment guard fails is reported back and gets nothing written,
// while the others in the same Txn still get theirs.
func TestCheckpointManyFilesAndFencing(t *testing.T) {
	e := newEnv(t)
	ra := e.startAgent("h1")
	testenv.WaitFor(t, 10*time.Second, "a lease proved alive", ra.a.reg.Alive)
	c := newCheckpointer(ra.a)
	var runs []*fileRun
	ctx := context.Background()
	const n = 300
	var stolen *fileRun
	for i := range n {
		fk := fmt.Sprintf("f%04d", i)
		key := e.ks.Assign("h1", "t", fk)
		v, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/x"})
		resp, err := e.cli.Put(ctx, key, string(v))
		require.NoError(t, err)
		fr := newFileRun("t", fk, key, resp.Header.Revision, e.path(fk), protocol.FileIdentity{Fingerprint: "ab", Inode: uint64(i)}, topics.Config{})
		fr.started = true
		fr.trackAll(0, []pendingRec{{start: int64(99 + i), end: int64(100 + i)}})
		fr.ack(0)
		runs = append(runs, fr)
		if i == 200 {
			stolen = fr
		}
	}
	// The file is taken away and given back: a new create revision, so the
	// agent's fence no longer holds.
	_, err := e.cli.Delete(ctx, stolen.assignKey)
	require.NoError(t, err)
	v, _ := protocol.Marshal(&protocol.Assignment{State: protocol.StateActive, Path: "/x"})
	_, err = e.cli.Put(ctx, stolen.assignKey, string(v))
	require.NoError(t, err)

	// A file whose tailer has not read its checkpoint yet writes none: it
	// would overwrite the previous owner's with 0.
	notStarted := newFileRun("t", "fresh", e.ks.Assign("h1", "t", "fresh"), 1, e.path("fresh"), protocol.FileIdentity{Fingerprint: "cd", Inode: 9999}, topics.Config{})
	runs = append(runs, notStarted)
	c.setRuns(runs)

	fenced := c.once(ctx)
	_, wrote := e.checkpoint("t", "fresh")
	require.False(t, wrote, "no checkpoint before the tailer started")
	for i := range n {
		fk := fmt.Sprintf("f%04d", i)
		cp, ok := e.checkpoint("t", fk)
		if fk == stolen.key {
			require.False(t, ok, "nothing may be written for a file whose guard failed")
			continue
		}
		require.True(t, ok, fk)
		require.Equal(t, int64(100+i), cp.Offset)
	}
	require.Equal(t, []*fileRun{stolen}, fenced, "the file whose guard failed is reported back")

	// Unchanged offsets are skipped: a second pass writes nothing.
	before := histogramCount(t, ra.reg, "logagent_checkpoint_duration_seconds")
	stolen.writable.Store(false) // as the controller's drop does
	require.Empty(t, c.once(ctx))
	require.Equal(t, before, histogramCount(t, ra.reg, "logagent_checkpoint_duration_seconds"))
}
