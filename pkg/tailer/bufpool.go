package tailer

import (
	"bufio"
	"context"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// readBufSize is the size of the buffer a tailer reads its file with.
const readBufSize = 64 << 10

// bufPool lends read buffers to tailers for the time of one read, from
// the offset to the end of the file: a tailer waiting for its file to grow
// holds none, so memory follows the files being read at this moment, not
// the files followed. out counts the buffers lent and not returned.
//
// At most maxReadBufs are lent at once; a tailer waits for one. Without
// the bound, ten thousand files with data at start-up were read at once,
// each holding its buffer while its lines waited for the shipper: 10,000
// x 64 KiB, most of the agent's 590 MiB peak. Two cores read no faster
// with more than a few dozen readers, and a reader holds its buffer only
// while its file has bytes it has not read.
type bufPool struct {
	pool sync.Pool
	out  atomic.Int64
	sem  *semaphore.Weighted
}

// maxReadBufs bounds the read buffers lent at once (4 MiB).
const maxReadBufs = 64

// readBufs is the process's pool: tailers of every file share it.
var readBufs = bufPool{sem: semaphore.NewWeighted(maxReadBufs)}

// get lends a buffered reader of src once one is free, or fails with
// ctx's error.
func (p *bufPool) get(ctx context.Context, src io.Reader) (*bufio.Reader, error) {
	if err := p.sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	p.out.Add(1)
	if br, ok := p.pool.Get().(*bufio.Reader); ok {
		br.Reset(src)
		return br, nil
	}
	return bufio.NewReaderSize(src, readBufSize), nil
}

// put takes a reader back; what it still buffered is dropped (the reader
// of a tailer tracks its offset itself and reads it again next time).
func (p *bufPool) put(br *bufio.Reader) {
	br.Reset(nil) // keeps the buffer, drops the file
	p.pool.Put(br)
	p.out.Add(-1)
	p.sem.Release(1)
}

// ReadBuffersInUse is how many read buffers tailers hold now: one per file
// being read at this moment, none for a file that waits for more.
func ReadBuffersInUse() int64 { return readBufs.out.Load() }
