package mirror

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// progress follows the progress requests of one watch (WithProgressRequests).
// It is owned by the watch loop.
type progress struct {
	m *Mirror
	// ctx is the watches' context: RequestProgress reaches the gRPC stream
	// of the watches only through a context with the same metadata.
	ctx context.Context
	// start is the revision the watches started after: the list handed
	// over every change up to it.
	start  int64
	wanted bool
	// revs holds, per prefix, the revision of the progress notification
	// its watch got since the request; 0 while none.
	revs []int64
	tick *time.Ticker
}

func newProgress(m *Mirror, ctx context.Context, start int64) *progress {
	return &progress{m: m, ctx: ctx, start: start, revs: make([]int64, len(m.prefixes))}
}

// want starts a request: only notifications that come after it count. It
// returns the answer at once when nothing was written since the list:
// etcd never answers for a watch whose start revision is above its
// current one, and the list already covers everything up to it.
func (p *progress) want() (Batch, bool) {
	ctx, cancel := context.WithTimeout(p.ctx, time.Second)
	resp, err := p.m.cli.Get(ctx, p.m.prefixes[0], clientv3.WithCountOnly())
	cancel()
	if err == nil && resp.Header.Revision <= p.start {
		return Batch{Revision: resp.Header.Revision, Progress: true}, true
	}
	p.wanted = true
	clear(p.revs)
	if p.tick == nil {
		p.tick = time.NewTicker(progressRetry)
	} else {
		p.tick.Reset(progressRetry)
	}
	p.ask()
	return Batch{}, false
}

// retry fires while a request is unanswered.
func (p *progress) retry() <-chan time.Time {
	if !p.wanted {
		return nil
	}
	return p.tick.C
}

// ask sends the request to etcd. A failure is only logged: the next retry
// asks again, and a broken stream breaks the watch anyway.
func (p *progress) ask() {
	ctx, cancel := context.WithTimeout(p.ctx, time.Second)
	defer cancel()
	if err := p.m.cli.RequestProgress(ctx); err != nil && p.ctx.Err() == nil {
		p.m.log.Debug("progress request failed; asking again", "prefixes", p.m.prefixes, "err", err)
	}
}

// notified records a progress notification on the watch of prefix i, and
// returns the batch to hand over once every prefix has had one.
func (p *progress) notified(i int, rev int64) (Batch, bool) {
	if !p.wanted {
		return Batch{}, false
	}
	p.revs[i] = rev
	lo := rev
	for _, r := range p.revs {
		if r == 0 {
			return Batch{}, false
		}
		lo = min(lo, r)
	}
	p.wanted = false
	p.tick.Stop()
	return Batch{Revision: lo, Progress: true}, true
}

func (p *progress) stop() {
	if p.tick != nil {
		p.tick.Stop()
	}
}

// streams numbers the mirrors that take progress requests.
var streams atomic.Int64

// ownStream gives ctx's watches a gRPC stream of their own. The etcd
// client shares one stream among all watches whose contexts carry the same
// metadata, and etcd answers a progress request only when every watcher of
// the stream is in sync and none starts above the current revision: a
// watch of someone else's (the election's watch of its own key starts at
// the revision after it, and waits there until etcd's next write) would
// otherwise hold back the answer indefinitely.
func ownStream(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "logferry-watch-stream", "mirror-"+strconv.FormatInt(streams.Add(1), 10))
}
