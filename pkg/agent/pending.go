package agent

// pendingQueue holds a file's records in flight, oldest first, in a
// circular buffer. It grows (doubling) when full, so a busy file's records
// cycle through the same memory however acks and new records interleave;
// a slice resliced from the front would have to be copied down or
// reallocated whenever its tail ran out of room, which the agent's
// benchmark showed as half of all it allocated. Once empty, a queue grown
// past pendingKeep lets go of its buffer: a file that had a burst must not
// keep its size for ever (the in-flight bound allows about 12,000 records,
// 300 KB of queue, for one file).
type pendingQueue struct {
	buf  []pendingRec // its length is 0 or a power of two
	head int          // index in buf of the oldest record
	n    int
}

func (q *pendingQueue) len() int { return q.n }

// at is the i-th oldest record.
func (q *pendingQueue) at(i int) *pendingRec { return &q.buf[(q.head+i)&(len(q.buf)-1)] }

// push appends recs as the newest.
func (q *pendingQueue) push(recs []pendingRec) {
	if need := q.n + len(recs); need > len(q.buf) {
		q.grow(need)
	}
	for len(recs) > 0 {
		tail := (q.head + q.n) & (len(q.buf) - 1)
		k := copy(q.buf[tail:min(len(q.buf), tail+len(q.buf)-q.n)], recs)
		q.n += k
		recs = recs[k:]
	}
}

// grow makes room for need records, keeping their order.
func (q *pendingQueue) grow(need int) {
	size := max(len(q.buf), 64)
	for size < need {
		size *= 2
	}
	buf := make([]pendingRec, size)
	k := copy(buf, q.buf[q.head:min(len(q.buf), q.head+q.n)])
	copy(buf[k:], q.buf[:q.n-k])
	q.buf, q.head = buf, 0
}

// pendingKeep is the largest buffer an empty queue keeps.
const pendingKeep = 1024

// dropOldest removes the k oldest records.
func (q *pendingQueue) dropOldest(k int) {
	q.head = (q.head + k) & (len(q.buf) - 1)
	q.n -= k
	q.shrinkIfEmpty()
}

// truncate keeps the k oldest records.
func (q *pendingQueue) truncate(k int) {
	q.n = k
	q.shrinkIfEmpty()
}

func (q *pendingQueue) shrinkIfEmpty() {
	if q.n == 0 && len(q.buf) > pendingKeep {
		q.buf, q.head = nil, 0
	}
}
