package ship

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/pierrec/lz4/v4"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
)

// The shipper writes through kafka-go's Transport (connections, metadata
// cache, leader routing, TLS, SASL) but not through its Writer: a call is
// one produce request per partition, encoded here as a v2 record batch in
// one pass with no allocation per record. The Writer cost about 10
// allocations and a metadata lookup per record, copied every message twice
// and encoded it through reflection with a Write call per field, all on the
// critical path of the one batch in flight (cmd/logagent BenchmarkShipFile).
// The writer's fields (s.w) remain the configuration: acks, balancer,
// compression, addresses.

// encodedCall is a call's records encoded, one record batch per partition
// they go to, ready to send.
type encodedCall struct {
	first  *entry // call[0] and len(call): which call this is
	n      int
	nparts int         // the topic's partitions when it was encoded
	pidx   []int32     // the partition of each record
	used   []int32     // the partitions, in order of first use
	bufs   []*batchBuf // used[i]'s batch; nil once sent or put back
	err    error       // encoding failed (every record gets it)
}

// encodeCall encodes call, records of topic in Send order, for a topic of
// nparts partitions.
func (s *Shipper) encodeCall(topic string, call []*entry, nparts int) *encodedCall {
	parts := make([]int, nparts)
	for i := range parts {
		parts[i] = i
	}
	ec := &encodedCall{first: call[0], n: len(call), nparts: nparts, pidx: make([]int32, len(call))}
	var prevKey []byte
	var p int32
	for i, e := range call {
		// A file's lines share their key: hash it once per run of them.
		// (A nil key is spread at random: balanced every time.)
		if k := e.key(); i == 0 || k == nil || !bytes.Equal(k, prevKey) {
			p = int32(s.w.Balancer.Balance(kafka.Message{Topic: topic, Key: k}, parts...))
			prevKey = k
		}
		ec.pidx[i] = p
		if !containsPart(ec.used, p) {
			ec.used = append(ec.used, p)
		}
	}
	for _, p := range ec.used {
		pb := s.bufs.get()
		if err := s.encodeBatch(pb, call, ec.pidx, p); err != nil {
			s.bufs.put(pb)
			ec.release(s)
			ec.err = err
			return ec
		}
		ec.bufs = append(ec.bufs, pb)
	}
	return ec
}

// matches says whether ec is call's encoding for nparts partitions.
func (ec *encodedCall) matches(call []*entry, nparts int) bool {
	return ec != nil && len(call) > 0 && ec.first == call[0] && ec.n == len(call) && ec.nparts == nparts
}

// release puts back the buffers not sent.
func (ec *encodedCall) release(s *Shipper) {
	for i, pb := range ec.bufs {
		if pb != nil {
			s.bufs.put(pb)
			ec.bufs[i] = nil
		}
	}
}

// produce writes call, records of topic in Send order, with at most one
// produce request per partition, the partitions in parallel, and waits for
// the answers or ctx. pre, if it is call's encoding, is sent as it is. It
// returns the error of each record (nil: acked; errs is nil if all were),
// or one error for all of them when none was written (the topic's metadata
// failed). A produce request already sent when ctx ends is left to finish
// (within WriteTimeout); shutdown waits for it.
func (s *Shipper) produce(ctx context.Context, topic string, call []*entry, pre *encodedCall) (errs []error, all error) {
	n, err := s.partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	ec := pre
	if !ec.matches(call, n) {
		ec = s.encodeCall(topic, call, n)
	}
	if ec.err != nil {
		return nil, ec.err
	}
	type result struct {
		p   int32
		err error
	}
	results := make(chan result, len(ec.used))
	for i, p := range ec.used {
		pb := ec.bufs[i]
		ec.bufs[i] = nil // the sender puts it back
		s.inflightReqs.Add(1)
		go func() {
			defer s.inflightReqs.Done()
			defer s.bufs.put(pb)
			results <- result{p, s.rawProduce(topic, int(p), pb.out.Bytes())}
		}()
	}
	for range ec.used {
		var r result
		select {
		case r = <-results:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if r.err == nil {
			continue
		}
		if errs == nil { // nil errs and nil all: every record acked
			errs = make([]error, len(call))
		}
		for i, p := range ec.pidx {
			if p == r.p {
				errs[i] = r.err
			}
		}
	}
	return errs, nil
}

func containsPart(ps []int32, p int32) bool {
	for _, x := range ps {
		if x == p {
			return true
		}
	}
	return false
}

// rawProduce sends one encoded record set to one partition's leader and
// returns the partition's error. Like kafka-go's Writer it uses its own
// WriteTimeout deadline, not the caller's context.
func (s *Shipper) rawProduce(topic string, partition int, set []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
	defer cancel()
	cl := kafka.Client{Addr: s.w.Addr, Transport: s.tr, Timeout: s.cfg.WriteTimeout}
	res, err := cl.RawProduce(ctx, &kafka.RawProduceRequest{
		Topic: topic, Partition: partition, RequiredAcks: s.w.RequiredAcks,
		RawRecords: protocol.RawRecordSet{Reader: bytes.NewReader(set)},
	})
	if err != nil {
		return err
	}
	if res != nil && res.Error != nil {
		return res.Error
	}
	return nil
}

// partitions is the number of partitions of topic, from the transport's
// metadata cache (as kafka-go's Writer asks it, once per record).
func (s *Shipper) partitions(ctx context.Context, topic string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	r, err := s.tr.RoundTrip(ctx, s.w.Addr, &metadataAPI.Request{
		TopicNames:             []string{topic},
		AllowAutoTopicCreation: s.cfg.AutoCreateTopics,
	})
	if err != nil {
		return 0, err
	}
	for _, t := range r.(*metadataAPI.Response).Topics {
		if t.Name == topic {
			if t.ErrorCode != 0 {
				return 0, kafka.Error(t.ErrorCode)
			}
			if len(t.Partitions) == 0 {
				return 0, kafka.UnknownTopicOrPartition
			}
			return len(t.Partitions), nil
		}
	}
	return 0, kafka.UnknownTopicOrPartition
}

// batchBuf is the scratch of one encoded batch: the records before
// compression, and the record set as sent.
type batchBuf struct {
	recs []byte
	out  bytes.Buffer
}

// Batches are compressed with lz4 as the LZ4 frame format Kafka expects,
// written here around pierrec/lz4's block compressor rather than through
// its frame Writer, which copied every byte into a block buffer of its own
// first. The compressor is CompressorCCompat, the reference
// implementation's fast algorithm (LZ4_compress_fast, acceleration 1):
// on the access-log records of the agent's benchmark about a fifth faster
// than pierrec's default one, at the same ratio (BenchmarkLZ4Compressors;
// on very regular text the default one can be faster). The frame has:
//   - blocks of 256 KiB instead of the Writer's 4 MiB default (the ratio
//     hardly changes: LZ4's window is 64 KiB), independent of each other;
//   - no content checksum (an xxHash32 of every byte, a tenth of the
//     compression's cost): the batch's CRC-32C covers the compressed
//     bytes, and neither the Java client nor librdkafka writes one;
//   - a block that does not shrink is stored as it is, flagged.
//
// lz4FrameHeader is the frame's magic number and descriptor (version 1,
// independent blocks, 256 KiB, no checksums or content size) with its
// header checksum: what pierrec/lz4's Writer writes for those options
// (TestLZ4FramesAsPierrecWrites).
var lz4FrameHeader = []byte{0x04, 0x22, 0x4d, 0x18, 0x60, 0x50, 0xfb}

const lz4BlockSize = 256 << 10

// appendLZ4Block compresses blk, at most lz4BlockSize bytes, as one block
// of an LZ4 frame onto out.
func appendLZ4Block(out *bytes.Buffer, blk []byte, c *lz4.CompressorCCompat) error {
	bound := lz4.CompressBlockBound(len(blk))
	out.Grow(4 + bound)
	dst := out.AvailableBuffer()[:4+bound]
	n, err := c.CompressBlock(blk, dst[4:])
	if err != nil {
		return err
	}
	if n == 0 || n >= len(blk) {
		var size [4]byte
		binary.LittleEndian.PutUint32(size[:], uint32(len(blk))|1<<31) // stored
		out.Write(size[:])
		out.Write(blk)
		return nil
	}
	binary.LittleEndian.PutUint32(dst, uint32(n))
	out.Write(dst[:4+n])
	return nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var zeroHeader [4 + batchHeaderLen]byte

// Offsets in a v2 record batch (after the record set's 4-byte size).
const (
	batchHeaderLen = 61
	offLength      = 8  // int32 batch length: bytes after this field
	offCRC         = 17 // uint32 CRC-32C of the bytes from attributes on
	offAttributes  = 21
)

// encodeBatch writes into pb.out the record set (int32 size, then one v2
// record batch) of the records of call on partition p, as kafka-go encodes
// them: no producer id, every record stamped with the time of encoding,
// nil keys and header values as null, values never (appendBody).
func (s *Shipper) encodeBatch(pb *batchBuf, call []*entry, pidx []int32, p int32) error {
	out := &pb.out
	out.Reset()
	out.Write(zeroHeader[:]) // the record set's size and the batch header, written below
	var c *lz4.CompressorCCompat
	if s.cfg.Compression == kafka.Lz4 {
		c = s.lz4s.get()
		defer s.lz4s.put(c)
		out.Write(lz4FrameHeader)
	}
	recs := pb.recs[:0]
	count := int32(0)
	for i, e := range call {
		if pidx[i] != p {
			continue
		}
		recs = appendRecord(recs, e, count)
		count++
		// lz4 compresses each block as soon as it is full, while its bytes
		// are still in the processor's cache: a whole batch (1 MB) is not.
		if c != nil && len(recs) >= lz4BlockSize {
			done := 0
			for ; len(recs)-done >= lz4BlockSize; done += lz4BlockSize {
				if err := appendLZ4Block(out, recs[done:done+lz4BlockSize], c); err != nil {
					return err
				}
			}
			recs = recs[:copy(recs, recs[done:])]
		}
	}
	pb.recs = recs

	switch s.cfg.Compression {
	case 0:
		out.Write(recs)
	case kafka.Lz4:
		if len(recs) > 0 {
			if err := appendLZ4Block(out, recs, c); err != nil {
				return err
			}
		}
		out.Write([]byte{0, 0, 0, 0}) // end mark
	default:
		w := s.cfg.Compression.Codec().NewWriter(out)
		if _, err := w.Write(recs); err != nil {
			w.Close()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}

	set := out.Bytes()
	binary.BigEndian.PutUint32(set[0:], uint32(len(set)-4))
	b := set[4:]
	now := time.Now().UnixMilli()
	// base offset 0
	binary.BigEndian.PutUint32(b[offLength:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[12:], 0xffffffff) // partition leader epoch -1
	b[16] = 2                                      // magic
	attrs := uint16(0)
	if s.cfg.Compression != 0 {
		attrs = uint16(s.cfg.Compression) & 7
	}
	binary.BigEndian.PutUint16(b[offAttributes:], attrs)
	binary.BigEndian.PutUint32(b[23:], uint32(count-1)) // last offset delta
	binary.BigEndian.PutUint64(b[27:], uint64(now))     // first timestamp
	binary.BigEndian.PutUint64(b[35:], uint64(now))     // max timestamp
	binary.BigEndian.PutUint64(b[43:], ^uint64(0))      // producer id -1
	binary.BigEndian.PutUint16(b[51:], 0xffff)          // producer epoch -1
	binary.BigEndian.PutUint32(b[53:], 0xffffffff)      // base sequence -1
	binary.BigEndian.PutUint32(b[57:], uint32(count))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
	// Buffers grown by a rare large batch are not kept for ever.
	if cap(pb.recs) > 4<<20 {
		pb.recs = nil
	}
	return nil
}

// appendRecord appends e as record count of a batch. The record's length
// counts what follows it: attributes, the timestamp delta (0: every record
// has the batch's time), the offset delta, then the body Send encoded.
func appendRecord(recs []byte, e *entry, count int32) []byte {
	length := 1 + 1 + varintLen(int(count)) + len(e.body)
	recs = binary.AppendVarint(recs, int64(length))
	recs = append(recs, 0, 0)
	recs = binary.AppendVarint(recs, int64(count))
	return append(recs, e.body...)
}

func appendNullBytes(dst, b []byte) []byte {
	if b == nil {
		return binary.AppendVarint(dst, -1)
	}
	dst = binary.AppendVarint(dst, int64(len(b)))
	return append(dst, b...)
}
