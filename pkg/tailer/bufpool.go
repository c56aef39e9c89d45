package tailer

import (
	"bufio"
	"io"
	"sync"
	"sync/atomic"
)

// readBufSize is the size of the buffer a tailer reads its file with.
const readBufSize = 64 << 10

// bufPool lends read buffers to tailers for the time of one read, from
// the offset to the end of the file: a tailer waiting for its file to grow
// holds none, so memory follows the files being read at this moment, not
// the files followed. out counts the buffers lent and not returned.
type bufPool struct {
	pool sync.Pool
	out  atomic.Int64
}

// readBufs is the process's pool: tailers of every file share it.
var readBufs bufPool

// get lends a buffered reader of src.
func (p *bufPool) get(src io.Reader) *bufio.Reader {
	p.out.Add(1)
	if br, ok := p.pool.Get().(*bufio.Reader); ok {
		br.Reset(src)
		return br
	}
	return bufio.NewReaderSize(src, readBufSize)
}

// put takes a reader back; what it still buffered is dropped (the reader
// of a tailer tracks its offset itself and reads it again next time).
func (p *bufPool) put(br *bufio.Reader) {
	br.Reset(nil) // keeps the buffer, drops the file
	p.pool.Put(br)
	p.out.Add(-1)
}

// ReadBuffersInUse is how many read buffers tailers hold now: one per file
// being read at this moment, none for a file that waits for more.
func ReadBuffersInUse() int64 { return readBufs.out.Load() }
