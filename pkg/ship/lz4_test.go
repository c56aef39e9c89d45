package ship

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/stretchr/testify/require"
)

// TestLZ4FramesAsPierrecWrites: appendLZ4Frame writes the frame header
// pierrec/lz4's Writer writes for the same options, and frames that its
// Reader decodes to the input: empty, small, incompressible, several
// blocks.
func TestLZ4FramesAsPierrecWrites(t *testing.T) {
	var ref bytes.Buffer
	w := lz4.NewWriter(&ref)
	require.NoError(t, w.Apply(lz4.BlockSizeOption(lz4.Block256Kb), lz4.ChecksumOption(false)))
	require.NoError(t, w.Close())
	require.Equal(t, lz4FrameHeader, ref.Bytes()[:len(lz4FrameHeader)], "frame header")

	random := make([]byte, 300<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	inputs := map[string][]byte{
		"empty":          nil,
		"small":          []byte("hello hello hello hello hello hello"),
		"incompressible": random,
		"blocks":         []byte(strings.Repeat("10.0.0.1 - - GET /index.html 200\n", 30_000)), // about 1 MB: 4 blocks
		"three blocks":   append([]byte(strings.Repeat("10.0.0.2 - - GET /a.html 404\n", 20_000)), random[:100]...),
	}
	var c lz4.CompressorCCompat
	for name, in := range inputs {
		var out bytes.Buffer
		out.WriteString("prefix") // frames are appended after the batch header
		require.NoError(t, appendLZ4Frame(&out, in, &c), name)
		got, err := io.ReadAll(lz4.NewReader(bytes.NewReader(out.Bytes()[len("prefix"):])))
		require.NoError(t, err, name)
		require.Equal(t, len(in), len(got), name)
		require.True(t, bytes.Equal(in, got), name)
		if name == "blocks" {
			require.Less(t, out.Len(), len(in)/4, "compressed")
		}
	}
}

// appendLZ4Frame compresses src as one LZ4 frame onto out, as encodeBatch
// does block by block.
func appendLZ4Frame(out *bytes.Buffer, src []byte, c *lz4.CompressorCCompat) error {
	out.Write(lz4FrameHeader)
	for len(src) > 0 {
		blk := src[:min(len(src), lz4BlockSize)]
		src = src[len(blk):]
		if err := appendLZ4Block(out, blk, c); err != nil {
			return err
		}
	}
	out.Write([]byte{0, 0, 0, 0}) // end mark
	return nil
}
