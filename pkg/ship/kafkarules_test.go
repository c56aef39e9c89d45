package ship

// A strict reader of what the shipper puts on the wire, written from Kafka's
// documented rules rather than from this package's encoder: the v2 record
// batch of KIP-98 (the "Record Batch" section of Kafka's protocol and
// implementation docs), the checks Apache Kafka's broker makes before it
// appends a batch (LogValidator: it decompresses every record of a
// compressed batch and checks offsets, counts, lengths and headers), and
// the LZ4 frame as Kafka's Java reader (KafkaLZ4BlockInputStream) accepts
// it. kfake, the test broker, checks only the batch header, so without this
// a batch that a real broker refuses could pass every other test.

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"math/bits"
	"time"
	"unicode/utf8"

	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Kafka's limits and constants used below.
const (
	kafkaLogOverhead       = 12        // baseOffset int64 + batchLength int32
	kafkaBatchOverhead     = 61        // the v2 batch header, both fields above included
	kafkaMaxMessageBytes   = 1_048_588 // the default max.message.bytes of a topic and message.max.bytes of a broker
	kafkaAttrCompression   = 0x07
	kafkaAttrKnownBits     = 0x7f // compression (3), timestamp type, transactional, control, delete horizon
	kafkaMaxVarintBytes    = 5    // ByteUtils.readVarint: "Varint is too long"
	kafkaMaxVarlongBytes   = 10
	kafkaTimestampTolerate = time.Hour // the producer stamps records with its clock
)

// wireRecord is one record as a consumer would see it.
type wireRecord struct {
	Key, Value []byte // nil: null
	Timestamp  int64
	Headers    []wireHeader
}

type wireHeader struct {
	Key   string
	Value []byte // nil: null
}

// checkRecordSet checks a produce request's record set (one or more v2
// batches back to back) and returns their records.
func checkRecordSet(set []byte, now time.Time) ([]wireRecord, error) {
	if len(set) == 0 {
		return nil, errors.New("empty record set")
	}
	var out []wireRecord
	for off := 0; off < len(set); {
		if len(set)-off < kafkaBatchOverhead {
			return nil, fmt.Errorf("batch at byte %d: %d bytes left, a v2 batch header is %d", off, len(set)-off, kafkaBatchOverhead)
		}
		n := int(int32(binary.BigEndian.Uint32(set[off+8:]))) + kafkaLogOverhead
		if n < kafkaBatchOverhead || off+n > len(set) {
			return nil, fmt.Errorf("batch at byte %d: batchLength %d does not fit the %d bytes of the set", off, n-kafkaLogOverhead, len(set)-off)
		}
		if n > kafkaMaxMessageBytes {
			return nil, fmt.Errorf("batch at byte %d: %d bytes, over the default max.message.bytes %d", off, n, kafkaMaxMessageBytes)
		}
		recs, err := checkBatch(set[off:off+n], now)
		if err != nil {
			return nil, fmt.Errorf("batch at byte %d: %w", off, err)
		}
		out = append(out, recs...)
		off += n
	}
	return out, nil
}

// checkBatch checks one v2 record batch, header and records.
func checkBatch(b []byte, now time.Time) ([]wireRecord, error) {
	be := binary.BigEndian
	baseOffset := int64(be.Uint64(b[0:]))
	leaderEpoch := int32(be.Uint32(b[12:]))
	magic := int8(b[16])
	crc := be.Uint32(b[17:])
	attrs := be.Uint16(b[21:])
	lastOffsetDelta := int32(be.Uint32(b[23:]))
	firstTS := int64(be.Uint64(b[27:]))
	maxTS := int64(be.Uint64(b[35:]))
	producerID := int64(be.Uint64(b[43:]))
	producerEpoch := int16(be.Uint16(b[51:]))
	baseSequence := int32(be.Uint32(b[53:]))
	count := int32(be.Uint32(b[57:]))
	switch {
	case magic != 2:
		return nil, fmt.Errorf("magic %d, want 2", magic)
	case crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)) != crc:
		return nil, fmt.Errorf("CRC-32C %#x does not match the bytes from attributes on", crc)
	case baseOffset != 0:
		// A compressed batch's inner offsets must run from 0, and a
		// producer has no offsets to give.
		return nil, fmt.Errorf("baseOffset %d, a producer sends 0", baseOffset)
	case leaderEpoch != -1:
		return nil, fmt.Errorf("partitionLeaderEpoch %d, a producer sends -1", leaderEpoch)
	case attrs&^kafkaAttrKnownBits != 0:
		return nil, fmt.Errorf("attributes %#x: unknown bits set", attrs)
	case attrs&0x08 != 0:
		return nil, fmt.Errorf("attributes %#x: LogAppendTime is the broker's to set", attrs)
	case attrs&0x70 != 0:
		return nil, fmt.Errorf("attributes %#x: transactional, control or delete-horizon bit set on a plain produce", attrs)
	case producerID != -1 || producerEpoch != -1 || baseSequence != -1:
		return nil, fmt.Errorf("producer id %d, epoch %d, base sequence %d: a non-idempotent producer sends -1 for each", producerID, producerEpoch, baseSequence)
	case count < 1:
		return nil, fmt.Errorf("record count %d: a batch holds at least one record", count)
	case lastOffsetDelta != count-1:
		return nil, fmt.Errorf("lastOffsetDelta %d, want count-1 = %d", lastOffsetDelta, count-1)
	}
	codec := attrs & kafkaAttrCompression
	body, err := decompressKafka(codec, b[kafkaBatchOverhead:])
	if err != nil {
		return nil, fmt.Errorf("codec %d: %w", codec, err)
	}
	recs, err := checkRecords(body, count, firstTS)
	if err != nil {
		return nil, err
	}
	largest := int64(math.MinInt64)
	for _, r := range recs {
		largest = max(largest, r.Timestamp)
	}
	if maxTS != largest {
		return nil, fmt.Errorf("maxTimestamp %d, the records' largest is %d", maxTS, largest)
	}
	if d := time.Duration(firstTS-now.UnixMilli()) * time.Millisecond; d.Abs() > kafkaTimestampTolerate {
		return nil, fmt.Errorf("firstTimestamp %d is %v away from the producer's clock", firstTS, d)
	}
	return recs, nil
}

// decompressKafka undoes the codec of attributes bits 0-2.
func decompressKafka(codec uint16, data []byte) ([]byte, error) {
	switch codec {
	case 0:
		return data, nil
	case 1:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		return io.ReadAll(zr)
	case 2:
		return readXerialSnappy(data)
	case 3:
		return readKafkaLZ4(data)
	case 4:
		d, err := zstd.NewReader(nil)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		return d.DecodeAll(data, nil)
	}
	return nil, fmt.Errorf("compression codec %d does not exist", codec)
}

// readXerialSnappy reads the framing of snappy-java's SnappyOutputStream,
// which Kafka's Java client writes and its broker reads: a magic header,
// then blocks each preceded by its big-endian length.
func readXerialSnappy(data []byte) ([]byte, error) {
	magic := []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}
	if !bytes.HasPrefix(data, magic) || len(data) < 16 {
		return nil, fmt.Errorf("no snappy-java stream header (% x)", data[:min(len(data), 16)])
	}
	if v, compat := binary.BigEndian.Uint32(data[8:]), binary.BigEndian.Uint32(data[12:]); v != 1 || compat != 1 {
		return nil, fmt.Errorf("snappy-java header version %d, compatible %d; want 1 and 1", v, compat)
	}
	var out []byte
	for rest := data[16:]; len(rest) > 0; {
		if len(rest) < 4 {
			return nil, fmt.Errorf("snappy block length cut short: %d bytes", len(rest))
		}
		n := int(binary.BigEndian.Uint32(rest))
		if n > len(rest)-4 {
			return nil, fmt.Errorf("snappy block of %d bytes, %d left", n, len(rest)-4)
		}
		blk, err := snappy.Decode(nil, rest[4:4+n])
		if err != nil {
			return nil, fmt.Errorf("snappy block: %w", err)
		}
		out = append(out, blk...)
		rest = rest[4+n:]
	}
	return out, nil
}

// readKafkaLZ4 reads an LZ4 frame as KafkaLZ4BlockInputStream does, and as
// strictly: magic, a frame descriptor of version 01 with no reserved bits,
// independent blocks (each is decompressed on its own), a block maximum
// size of 64 KiB to 4 MiB, the header checksum byte (xxHash32 of the
// descriptor, second byte), blocks no larger than the maximum, the high bit
// of a block size marking a stored block, and the end mark. This package
// writes neither content size nor content checksum (nor does Kafka's
// writer), so either flag is refused.
func readKafkaLZ4(data []byte) ([]byte, error) {
	le := binary.LittleEndian
	if len(data) < 7 || le.Uint32(data) != 0x184D2204 {
		return nil, fmt.Errorf("no LZ4 frame magic (% x)", data[:min(len(data), 4)])
	}
	flg, bd := data[4], data[5]
	switch {
	case flg>>6 != 1:
		return nil, fmt.Errorf("FLG %#08b: version %d, Kafka reads 1", flg, flg>>6)
	case flg&0x03 != 0:
		return nil, fmt.Errorf("FLG %#08b: reserved bits set", flg)
	case flg&0x20 == 0:
		return nil, fmt.Errorf("FLG %#08b: dependent blocks; Kafka decompresses each block on its own", flg)
	case flg&0x08 != 0:
		return nil, fmt.Errorf("FLG %#08b: content size set", flg)
	case flg&0x04 != 0:
		return nil, fmt.Errorf("FLG %#08b: content checksum set", flg)
	case bd&0x8f != 0:
		return nil, fmt.Errorf("BD %#08b: reserved bits set", bd)
	case bd>>4&7 < 4:
		return nil, fmt.Errorf("BD %#08b: block maximum size code %d, want 4-7", bd, bd>>4&7)
	}
	if hc := byte(xxh32(data[4:6], 0) >> 8); data[6] != hc {
		return nil, fmt.Errorf("header checksum %#02x, want (xxHash32(descriptor) >> 8) & 0xFF = %#02x", data[6], hc)
	}
	blockChecksums := flg&0x10 != 0
	maxBlock := 1 << (8 + 2*int(bd>>4&7))
	buf := make([]byte, maxBlock)
	var out []byte
	rest := data[7:]
	for {
		if len(rest) < 4 {
			return nil, fmt.Errorf("LZ4 frame ends without an end mark")
		}
		size := le.Uint32(rest)
		rest = rest[4:]
		if size == 0 {
			break
		}
		stored := size&(1<<31) != 0
		n := int(size &^ (1 << 31))
		if n > maxBlock || n > len(rest) {
			return nil, fmt.Errorf("LZ4 block of %d bytes: the maximum is %d, and %d are left", n, maxBlock, len(rest))
		}
		blk := rest[:n]
		rest = rest[n:]
		if blockChecksums {
			if len(rest) < 4 || le.Uint32(rest) != xxh32(blk, 0) {
				return nil, errors.New("LZ4 block checksum missing or wrong")
			}
			rest = rest[4:]
		}
		if stored {
			out = append(out, blk...)
			continue
		}
		m, err := lz4.UncompressBlock(blk, buf)
		if err != nil {
			return nil, fmt.Errorf("LZ4 block does not decompress on its own: %w", err)
		}
		out = append(out, buf[:m]...)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the LZ4 end mark", len(rest))
	}
	return out, nil
}

// xxh32 is xxHash32, written from its specification.
func xxh32(b []byte, seed uint32) uint32 {
	const p1, p2, p3, p4, p5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
	round := func(acc, lane uint32) uint32 { return bits.RotateLeft32(acc+lane*p2, 13) * p1 }
	n := uint32(len(b))
	var h uint32
	if len(b) >= 16 {
		v1, v2, v3, v4 := seed+p1+p2, seed+p2, seed, seed-p1
		for ; len(b) >= 16; b = b[16:] {
			v1 = round(v1, binary.LittleEndian.Uint32(b[0:]))
			v2 = round(v2, binary.LittleEndian.Uint32(b[4:]))
			v3 = round(v3, binary.LittleEndian.Uint32(b[8:]))
			v4 = round(v4, binary.LittleEndian.Uint32(b[12:]))
		}
		h = bits.RotateLeft32(v1, 1) + bits.RotateLeft32(v2, 7) + bits.RotateLeft32(v3, 12) + bits.RotateLeft32(v4, 18)
	} else {
		h = seed + p5
	}
	h += n
	for ; len(b) >= 4; b = b[4:] {
		h = bits.RotateLeft32(h+binary.LittleEndian.Uint32(b)*p3, 17) * p4
	}
	for ; len(b) > 0; b = b[1:] {
		h = bits.RotateLeft32(h+uint32(b[0])*p5, 11) * p1
	}
	h ^= h >> 15
	h *= p2
	h ^= h >> 13
	h *= p3
	h ^= h >> 16
	return h
}

// kreader reads Kafka's primitive types, naming what it reads in errors.
type kreader struct {
	b   []byte
	err error
}

func (r *kreader) varint(what string, maxBytes int) int64 {
	if r.err != nil {
		return 0
	}
	var ux uint64
	for i := 0; ; i++ {
		if i == maxBytes {
			r.err = fmt.Errorf("%s: varint longer than %d bytes", what, maxBytes)
			return 0
		}
		if i == len(r.b) {
			r.err = fmt.Errorf("%s: varint cut short", what)
			return 0
		}
		c := r.b[i]
		ux |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			r.b = r.b[i+1:]
			return int64(ux>>1) ^ -int64(ux&1) // zigzag
		}
	}
}

// nullable reads a varint length (-1: null) and that many bytes.
func (r *kreader) nullable(what string) []byte {
	n := r.varint(what+" length", kafkaMaxVarintBytes)
	switch {
	case r.err != nil:
		return nil
	case n == -1:
		return nil
	case n < -1 || n > int64(len(r.b)):
		r.err = fmt.Errorf("%s length %d, %d bytes left", what, n, len(r.b))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	if v == nil {
		v = []byte{}
	}
	return v
}

// checkRecords reads exactly count records from body and nothing more.
func checkRecords(body []byte, count int32, firstTS int64) ([]wireRecord, error) {
	r := &kreader{b: body}
	recs := make([]wireRecord, 0, count)
	for i := range count {
		length := r.varint("record length", kafkaMaxVarintBytes)
		if r.err != nil {
			return nil, fmt.Errorf("record %d: %w", i, r.err)
		}
		if length < 1 || length > int64(len(r.b)) {
			return nil, fmt.Errorf("record %d: length %d, %d bytes left", i, length, len(r.b))
		}
		rec, err := checkRecord(r.b[:length], i, firstTS)
		if err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
		recs = append(recs, rec)
		r.b = r.b[length:]
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%d bytes after the %d records the header counts", len(r.b), count)
	}
	return recs, nil
}

func checkRecord(b []byte, index int32, firstTS int64) (wireRecord, error) {
	if b[0] != 0 {
		return wireRecord{}, fmt.Errorf("attributes %#x, unused and 0", b[0])
	}
	r := &kreader{b: b[1:]}
	tsDelta := r.varint("timestampDelta", kafkaMaxVarlongBytes)
	offDelta := r.varint("offsetDelta", kafkaMaxVarintBytes)
	rec := wireRecord{Timestamp: firstTS + tsDelta}
	rec.Key = r.nullable("key")
	rec.Value = r.nullable("value")
	nh := r.varint("header count", kafkaMaxVarintBytes)
	if r.err == nil && (nh < 0 || nh > int64(len(r.b))) {
		r.err = fmt.Errorf("header count %d with %d bytes left", nh, len(r.b))
	}
	for h := int64(0); h < nh && r.err == nil; h++ {
		k := r.nullable("header key")
		switch {
		case r.err != nil:
		case k == nil:
			r.err = fmt.Errorf("header %d: null key", h)
		case !utf8.Valid(k):
			r.err = fmt.Errorf("header %d: key %q is not UTF-8", h, k)
		}
		rec.Headers = append(rec.Headers, wireHeader{Key: string(k), Value: r.nullable("header value")})
	}
	switch {
	case r.err != nil:
		return wireRecord{}, r.err
	case tsDelta < 0:
		return wireRecord{}, fmt.Errorf("timestampDelta %d: before the batch's firstTimestamp", tsDelta)
	case offDelta != int64(index):
		return wireRecord{}, fmt.Errorf("offsetDelta %d, want its index %d", offDelta, index)
	case len(r.b) != 0:
		return wireRecord{}, fmt.Errorf("%d bytes left after the headers, inside the record's length", len(r.b))
	}
	return rec, nil
}
