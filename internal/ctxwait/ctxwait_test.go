package ctxwait

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !Sleep(context.Background(), time.Minute) {
			t.Fatal("Sleep without cancel must return true")
		}
		if got := time.Since(start); got != time.Minute {
			t.Fatalf("slept %v, want 1m", got)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		start = time.Now()
		if Sleep(ctx, time.Hour) {
			t.Fatal("Sleep with a cancelled context must return false")
		}
		if got := time.Since(start); got != time.Second {
			t.Fatalf("returned after %v, want 1s (the cancel)", got)
		}
	})
}
