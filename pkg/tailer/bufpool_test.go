package tailer

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/semaphore"
)

// TestReadBuffersAreBounded: at most maxReadBufs buffers are lent at once;
// the next reader waits until one comes back, or until its context ends.
func TestReadBuffersAreBounded(t *testing.T) {
	p := bufPool{sem: semaphore.NewWeighted(maxReadBufs)}
	ctx := context.Background()
	var lent []*bufio.Reader
	for range maxReadBufs {
		br, err := p.get(ctx, strings.NewReader("x"))
		require.NoError(t, err)
		lent = append(lent, br)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err := p.get(short, strings.NewReader("x"))
	require.ErrorIs(t, err, context.DeadlineExceeded, "a reader past the bound waits")

	got := make(chan error, 1)
	go func() {
		br, err := p.get(ctx, strings.NewReader("x"))
		if err == nil {
			p.put(br)
		}
		got <- err
	}()
	p.put(lent[0])
	require.NoError(t, <-got, "and gets the buffer given back")
	for _, br := range lent[1:] {
		p.put(br)
	}
	require.Zero(t, p.out.Load())
}
