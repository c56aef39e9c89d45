package testenv

import (
	"context"
	"errors"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrInjected is the error KVFaults answers with.
var ErrInjected = errors.New("testenv: injected etcd failure")

// KVFaults wraps a real client's KV so a test can make some requests fail
// as if etcd could not be reached, while everything else goes to the real
// server.
type KVFaults struct {
	clientv3.KV
	mu         sync.Mutex
	failGet    func(key string) bool // Gets of keys it holds for fail
	deleteTxns int                   // this many more Txns that delete a key fail
	failed     int
}

// InjectKVFaults installs the wrapper on cli; use it before handing cli to
// the code under test.
func InjectKVFaults(cli *clientv3.Client) *KVFaults {
	f := &KVFaults{KV: cli.KV}
	cli.KV = f
	return f
}

// FailGets makes every Get of a key match holds for fail (nil stops it).
func (f *KVFaults) FailGets(match func(key string) bool) {
	f.mu.Lock()
	f.failGet = match
	f.mu.Unlock()
}

// FailDeleteTxns makes the next n Txns whose Then branch deletes a key fail.
func (f *KVFaults) FailDeleteTxns(n int) {
	f.mu.Lock()
	f.deleteTxns = n
	f.mu.Unlock()
}

// Failed is how many requests were failed so far.
func (f *KVFaults) Failed() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// Get fails for the keys FailGets names.
func (f *KVFaults) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	f.mu.Lock()
	fail := f.failGet != nil && f.failGet(key)
	if fail {
		f.failed++
	}
	f.mu.Unlock()
	if fail {
		return nil, ErrInjected
	}
	return f.KV.Get(ctx, key, opts...)
}

// Txn wraps the real Txn to fail it at Commit if asked to.
func (f *KVFaults) Txn(ctx context.Context) clientv3.Txn {
	return &faultyTxn{Txn: f.KV.Txn(ctx), f: f}
}

type faultyTxn struct {
	clientv3.Txn
	f       *KVFaults
	deletes bool
}

func (t *faultyTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *faultyTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.deletes = t.deletes || op.IsDelete()
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *faultyTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *faultyTxn) Commit() (*clientv3.TxnResponse, error) {
	t.f.mu.Lock()
	fail := t.deletes && t.f.deleteTxns > 0
	if fail {
		t.f.deleteTxns--
		t.f.failed++
	}
	t.f.mu.Unlock()
	if fail {
		return nil, ErrInjected
	}
	return t.Txn.Commit()
}
