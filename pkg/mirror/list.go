package mirror

import (
	"context"
	"errors"
	"fmt"
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
			state[string(kv.Key)] = entry{value: kv.Value, create: kv.CreateRevision, mod: kv.ModRevision, lease: kv.Lease}
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
	var rev int64
	for _, p := range prefixes {
		end := clientv3.GetPrefixRangeEnd(p)
		from := p
		only := slices.Contains(keysOnly, p)
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(pageSize))}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			if only {
				opts = append(opts, clientv3.WithKeysOnly())
			}
			resp, err := kv.Get(ctx, from, opts...)
			if err != nil {
				return rev, fmt.Errorf("list %s from %q at revision %d: %w", p, from, rev, err)
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			if err := fn(rev, resp.Kvs); err != nil {
				return rev, err
			}
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	return rev, nil
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
			b := Batch{Revision: rev, Snapshot: first, Partial: true, Events: make([]Event, len(page))}
			for i, kv := range page {
				b.Events[i] = Event{Type: Put, KV: fromPB(kv)}
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
