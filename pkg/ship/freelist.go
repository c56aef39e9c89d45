package ship

// freeList keeps up to a fixed number of spare values for reuse. Unlike a
// sync.Pool it is not emptied by every garbage collection: the shipper's
// buffers are reused batch after batch, and a pool that drops them each
// cycle makes the next batch allocate (and clear) them again, which makes
// the next cycle come sooner.
type freeList[T any] struct {
	ch    chan T
	fresh func() T
}

func newFreeList[T any](size int, fresh func() T) *freeList[T] {
	return &freeList[T]{ch: make(chan T, size), fresh: fresh}
}

// get returns a spare value, or a fresh one if none is spare.
func (f *freeList[T]) get() T {
	select {
	case v := <-f.ch:
		return v
	default:
		return f.fresh()
	}
}

// put keeps v for a later get, or drops it if the list is full.
func (f *freeList[T]) put(v T) {
	select {
	case f.ch <- v:
	default:
	}
}
