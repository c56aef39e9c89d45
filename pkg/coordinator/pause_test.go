package coordinator

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// The pause between a pass's Txns lasts as asked, and a stop cuts it short.
func TestPauseWaitsOrStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		require.NoError(t, pause(context.Background(), 300*time.Millisecond))
		require.Equal(t, 300*time.Millisecond, time.Since(start))

		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start = time.Now()
		require.ErrorIs(t, pause(ctx, time.Hour), context.Canceled)
		require.Equal(t, 100*time.Millisecond, time.Since(start))
	})
}
