package mirror

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// list reads every prefix at one revision, in pages of pageSize keys: the
// first page fixes the revision R, the others are read WithRev(R) from the
// key after the last one read. If R is compacted meanwhile the list starts
// again at a new revision.
func (m *Mirror) list(ctx context.Context) (map[string]entry, int64, error) {
	for {
		state, rev, err := m.listOnce(ctx)
		if errors.Is(err, rpctypes.ErrCompacted) && ctx.Err() == nil {
			m.log.Info("list revision compacted while paging; listing again", "prefixes", m.prefixes, "revision", rev)
			continue
		}
		return state, rev, err
	}
}

func (m *Mirror) listOnce(ctx context.Context) (map[string]entry, int64, error) {
	state := make(map[string]entry)
	rev, err := ListPages(ctx, m.cli, m.prefixes, m.pageSize, m.keysOnly, func(_ int64, page []*mvccpb.KeyValue) error {
		for _, kv := range page {
			if m.kept(string(kv.Key)) {
				state[string(kv.Key)] = entry{value: kv.Value, create: kv.CreateRevision, mod: kv.ModRevision, lease: kv.Lease}
			}
		}
		return nil
	})
	return state, rev, err
}

// ListPages reads every key under each prefix at one revision, in pages of
// at most pageSize keys, and calls fn with each page in key order (and the
// revision); it returns the revision, or fn's first error. The first page is read at the current revision R, every later
// one WithRev(R) from the key after the last one read, so the keys are one
// consistent snapshot while no request is large. Prefixes in keysOnly are
// read without values. If R is compacted before the last page, the error
// wraps rpctypes.ErrCompacted: list again.
func ListPages(ctx context.Context, kv clientv3.KV, prefixes []string, pageSize int, keysOnly []string, fn func(rev int64, page []*mvccpb.KeyValue) error) (int64, error) {
	if pageSize < 1 {
		return 0, fmt.Errorf("mirror: page size %d: must be at least 1", pageSize)
	}
	l := &lister{kv: kv, pageSize: pageSize, fn: fn}
	for _, p := range prefixes {
		l.prefix, l.keysOnly = p, slices.Contains(keysOnly, p)
		if err := l.list(ctx, p, clientv3.GetPrefixRangeEnd(p)); err != nil {
			return l.rev, err
		}
	}
	return l.rev, nil
}

// splitPages: a range with more than this many pages left is split in two
// before it is paged through.
//
// Why: etcd answers a range with a limit with the total count of keys in
// the whole range, which it counts by visiting every one of them (etcd
// issues 11057, 16510). Paging straight through N keys, P at a time, thus
// makes etcd visit about N*N/(2P) keys: at a million keys in pages of 1,000,
// half a billion, minutes of etcd's CPU. Split in halves of the key space
// whenever many pages are left, every key is visited about log2(N/P) times
// instead, and no request counts more than its own part of the range.
const splitPages = 8

type lister struct {
	kv       clientv3.KV
	pageSize int
	fn       func(int64, []*mvccpb.KeyValue) error
	prefix   string
	keysOnly bool
	rev      int64
}

// list reads the keys in [from, end) in key order: one page, then, if many
// pages are left, the two halves of what is left (each the same way), else
// page after page.
func (l *lister) list(ctx context.Context, from, end string) error {
	for {
		resp, err := l.page(ctx, from, end)
		if err != nil {
			return err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		if left := resp.Count - int64(len(resp.Kvs)); left > splitPages*int64(l.pageSize) {
			if mid, ok := midKey(from, end); ok {
				if err := l.list(ctx, from, mid); err != nil {
					return err
				}
				return l.list(ctx, mid, end)
			}
		}
	}
}

func (l *lister) page(ctx context.Context, from, end string) (*clientv3.GetResponse, error) {
	opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(l.pageSize))}
	if l.rev != 0 {
		opts = append(opts, clientv3.WithRev(l.rev))
	}
	if l.keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := l.kv.Get(ctx, from, opts...)
	if err != nil {
		return nil, fmt.Errorf("list %s from %q at revision %d: %w", l.prefix, from, l.rev, err)
	}
	if l.rev == 0 {
		l.rev = resp.Header.Revision
	}
	if err := l.fn(l.rev, resp.Kvs); err != nil {
		return nil, err
	}
	return resp, nil
}

// midKey returns a key half way between a and b in byte order (both padded
// with zero bytes to one length past the longer), if there is one strictly
// between them.
func midKey(a, b string) (string, bool) {
	n := max(len(a), len(b)) + 1
	x, y := new(big.Int).SetBytes(padded(a, n)), new(big.Int).SetBytes(padded(b, n))
	m := new(big.Int).Rsh(new(big.Int).Add(x, y), 1)
	mid := string(m.FillBytes(make([]byte, n)))
	return mid, a < mid && mid < b
}

func padded(s string, n int) []byte {
	out := make([]byte, n)
	copy(out, s)
	return out
}

// handlerError carries the handler's error out of a paged list, so that
// Run returns it instead of retrying.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// listPaged hands the list over page by page (WithoutState), starting over
// with a new snapshot if its revision is compacted meanwhile.
func (m *Mirror) listPaged(ctx context.Context, handle func(Batch) error) (int64, error) {
	for {
		var pending *Batch
		first := true
		rev, err := ListPages(ctx, m.cli, m.prefixes, m.pageSize, m.keysOnly, func(rev int64, page []*mvccpb.KeyValue) error {
			// Hand over the previous page now that another follows: the
			// last one goes without Partial.
			if pending != nil {
				if err := handle(*pending); err != nil {
					return handlerError{err}
				}
			}
			b := Batch{Revision: rev, Snapshot: first, Partial: true, Events: make([]Event, 0, len(page))}
			for _, kv := range page {
				if m.kept(string(kv.Key)) {
					b.Events = append(b.Events, Event{Type: Put, KV: fromPB(kv)})
				}
			}
			pending, first = &b, false
			return nil
		})
		if errors.Is(err, rpctypes.ErrCompacted) && ctx.Err() == nil {
			m.log.Info("list revision compacted while paging; listing again", "prefixes", m.prefixes, "revision", rev)
			continue
		}
		if err != nil {
			return rev, err
		}
		if pending == nil {
			pending = &Batch{Revision: rev, Snapshot: true}
		}
		pending.Partial = false
		if err := handle(*pending); err != nil {
			return rev, handlerError{err}
		}
		return rev, nil
	}
}
