package main

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
)

// getSpy records the range requests made through the real client.
type getSpy struct {
	clientv3.KV
	mu  sync.Mutex
	ops []clientv3.Op
}

func (s *getSpy) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	s.mu.Lock()
	s.ops = append(s.ops, clientv3.OpGet(key, opts...))
	s.mu.Unlock()
	return s.KV.Get(ctx, key, opts...)
}

func (s *getSpy) Txn(ctx context.Context) clientv3.Txn {
	s.mu.Lock()
	s.ops = append(s.ops, clientv3.OpTxn(nil, nil, nil))
	s.mu.Unlock()
	return s.KV.Txn(ctx)
}

// The read commands read whole prefixes in pages at one revision, never
// in one request.
func TestStateIsReadInPagesAtOneRevision(t *testing.T) {
	e := testenv.StartEtcd(t)
	seed(t, e.Client())
	cli := e.Client()
	spy := &getSpy{KV: cli.KV}
	cli.KV = spy
	whole, err := readState(context.Background(), e.Client(), keyspace.Space{}, 1000)
	require.NoError(t, err)

	st, err := readState(context.Background(), cli, keyspace.Space{}, 2)
	require.NoError(t, err)
	require.Equal(t, whole, st, "pages of 2 read what one page does")
	require.Equal(t, "coord-a", st.Leader)

	require.Greater(t, len(spy.ops), 5)
	for i, op := range spy.ops {
		require.True(t, op.IsGet(), "request %d is a range", i)
		if i > 0 {
			require.Equal(t, st.Revision, op.Rev(), "request %d at the first page's revision", i)
		}
		if i < len(spy.ops)-1 { // the last reads the leader: one key
			require.Equal(t, int64(2), op.Limit(), "request %d", i)
		}
	}
}

func TestPageSizeMustBePositive(t *testing.T) {
	r := logctl("status", "--etcd-endpoints=127.0.0.1:1", "--page-size", "0")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "--page-size 0")
}
