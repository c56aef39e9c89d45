// Package ctxwait holds the one wait every retry loop needs: sleep for a
// while unless the context ends first.
package ctxwait

import (
	"context"
	"time"
)

// Sleep waits for d and reports true, or returns false as soon as ctx is
// done. The timer is released either way.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
