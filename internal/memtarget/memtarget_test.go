package memtarget

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const mib = 1 << 20

// TestLimitFollowsTheLiveHeap: the limit is the target while the live heap
// fits under it with a quarter to spare, and rises with the live heap
// beyond.
func TestLimitFollowsTheLiveHeap(t *testing.T) {
	require.Equal(t, int64(64*mib), Limit(64*mib, Usage{Live: 40 * mib, NonHeap: 8 * mib}))
	require.Equal(t, int64(8*mib+100*mib+25*mib), Limit(64*mib, Usage{Live: 100 * mib, NonHeap: 8 * mib}))
	require.Equal(t, int64(8*mib+48*mib+12*mib), Limit(64*mib, Usage{Live: 48 * mib, NonHeap: 8 * mib}), "just past the target")
}

// run starts Run with cfg and returns its stop.
func run(t *testing.T, cfg Config) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	return func() {
		cancel()
		require.NoError(t, <-done)
	}
}

// TestRunSteersTheLimitAndPutsItBack: Run sets the limit to the target,
// raises it past a live heap that outgrew the target, and puts back the
// limit it found when it returns.
func TestRunSteersTheLimitAndPutsItBack(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	stop := run(t, Config{Target: 1 << 40, Every: 10 * time.Millisecond})
	testenv.WaitFor(t, 5*time.Second, "the limit at the target", func() bool { return debug.SetMemoryLimit(-1) == 1<<40 })
	stop()
	require.Equal(t, before, debug.SetMemoryLimit(-1), "the limit found is put back")

	// A live heap of 64 MiB against a target of 1 MiB: the limit leaves
	// it a quarter to grow.
	live := make([]byte, 64*mib)
	for i := range live {
		live[i] = 1
	}
	runtime.GC()
	stop = run(t, Config{Target: mib, Every: 10 * time.Millisecond})
	testenv.WaitFor(t, 5*time.Second, "the limit set, above the live heap", func() bool {
		l := debug.SetMemoryLimit(-1)
		return l != before && l >= 80*mib
	})
	stop()
	runtime.KeepAlive(live)
	require.Equal(t, before, debug.SetMemoryLimit(-1))
}

// TestGOMEMLIMITWins: with GOMEMLIMIT set, the operator's limit stands.
func TestGOMEMLIMITWins(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "1GiB")
	before := debug.SetMemoryLimit(-1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, Run(ctx, Config{Target: mib}))
	require.NoError(t, ctx.Err(), "returned at once, not when the context ended")
	require.Equal(t, before, debug.SetMemoryLimit(-1))
}

// TestParseSize: sizes as GOMEMLIMIT writes them; anything else names
// what it wants.
func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "48MiB": 48 * mib, "1.5GiB": 1536 * mib, "123456": 123456, "64KiB": 64 << 10, "7B": 7} {
		got, err := ParseSize(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, bad := range []string{"", "lots", "-1", "1GB", "NaNMiB", "1e30TiB", "0.5", "0.1B"} {
		_, err := ParseSize(bad)
		require.ErrorIs(t, err, ErrSize, bad)
	}
}
