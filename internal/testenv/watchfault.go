package testenv

import (
	"context"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// WatchFaults wraps a real client's Watcher so a test can break live
// watches (their channels close, as when a stream is lost) or hold back new
// ones while it changes and compacts etcd underneath. Everything else goes
// to the real server.
type WatchFaults struct {
	clientv3.Watcher
	mu      sync.Mutex
	calls   int
	gate    chan struct{}
	holds   func(key string) bool // which new watches the gate holds
	cancels []context.CancelFunc
}

// InjectWatchFaults installs the wrapper on cli; use it before handing cli
// to the code under test.
func InjectWatchFaults(cli *clientv3.Client) *WatchFaults {
	f := &WatchFaults{Watcher: cli.Watcher}
	cli.Watcher = f
	return f
}

// Watch counts the call, waits while the test holds watches back, then
// opens the real watch.
func (f *WatchFaults) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	f.mu.Lock()
	f.calls++
	gate := f.gate
	if gate != nil && !f.holds(key) {
		gate = nil
	}
	wctx, cancel := context.WithCancel(ctx)
	f.cancels = append(f.cancels, cancel)
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	return f.Watcher.Watch(wctx, key, opts...)
}

// BreakAll closes every watch opened so far.
func (f *WatchFaults) BreakAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cancels {
		c()
	}
	f.cancels = nil
}

// Hold makes new Watch calls wait until release is called.
func (f *WatchFaults) Hold() (release func()) {
	return f.HoldKeys(func(string) bool { return true })
}

// HoldKeys makes new Watch calls of the keys (or prefixes) that match
// wait until release is called; others open at once.
func (f *WatchFaults) HoldKeys(match func(key string) bool) (release func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	gate := make(chan struct{})
	f.gate, f.holds = gate, match
	var once sync.Once
	return func() { // idempotent
		once.Do(func() {
			f.mu.Lock()
			f.gate = nil
			f.mu.Unlock()
			close(gate)
		})
	}
}

// Calls is the number of Watch calls so far.
func (f *WatchFaults) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// CompactAll compacts etcd at its current revision, physically, so any
// watch that starts below it fails with ErrCompacted.
func (e *Etcd) CompactAll(cli *clientv3.Client) int64 {
	e.t.Helper()
	resp, err := cli.Get(context.Background(), "compact-probe")
	if err != nil {
		e.t.Fatalf("get revision: %v", err)
	}
	if _, err := cli.Compact(context.Background(), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		e.t.Fatalf("compact at %d: %v", resp.Header.Revision, err)
	}
	return resp.Header.Revision
}
