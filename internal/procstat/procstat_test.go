package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReadsThisProcess: this process's CPU time grows as it works, and its
// status gives sizes in bytes and counts as they are; a missing field is
// an error naming it.
func TestReadsThisProcess(t *testing.T) {
	pid := os.Getpid()
	before, err := CPU(pid)
	require.NoError(t, err)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		now, err := CPU(pid)
		require.NoError(t, err)
		if now > before {
			break
		}
		runtime.Gosched() // spin: CPU time moves by clock ticks of 10 ms
	}
	after, err := CPU(pid)
	require.NoError(t, err)
	require.Greater(t, after, before)

	st, err := Status(pid, "VmRSS", "Threads")
	require.NoError(t, err)
	require.Greater(t, st["VmRSS"], int64(1<<20), "bytes, not kB")
	require.Positive(t, st["Threads"])
	require.Less(t, st["Threads"], int64(10000), "a count, not scaled")

	_, err = Status(pid, "NoSuchField")
	require.ErrorContains(t, err, "NoSuchField")
}
