package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRoundTrip(t *testing.T) {
	hb := Heartbeat{Agent: "10.0.0.1", Version: "v1.2.3", Started: time.Unix(100, 0).UTC(),
		Files: []SeenFile{{Key: "k", Path: "/var/log/a", Size: 10, Identity: FileIdentity{Fingerprint: "ff", Inode: 3}}}}
	data, err := Marshal(&hb)
	require.NoError(t, err)
	var back Heartbeat
	require.NoError(t, Unmarshal("/topics/t/a", data, &back))
	require.Equal(t, hb, back)
	require.Equal(t, Version, back.V)

	a := Assignment{State: StateRevoking, Path: "/p", Leader: "c1", Revoking: "b"}
	data, err = Marshal(&a)
	require.NoError(t, err)
	var ab Assignment
	require.NoError(t, Unmarshal("k", data, &ab))
	require.Equal(t, a, ab)
}

func TestUnmarshalRejects(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{`{"v":2,"offset":1}`, "v=2"},
		{`{"offset":1}`, "v=0"},
		{`{"v":1,"offset":"1"}`, "offset"},
		{`{"v":1} {}`, "trailing"},
	} {
		var c Checkpoint
		err := Unmarshal("/offsets/t/f", []byte(tc.data), &c)
		require.ErrorContains(t, err, tc.want, tc.data)
		require.ErrorContains(t, err, "/offsets/t/f", "errors name the key")
	}
}

// TestLargeHeartbeatsAreCompressed: 10,000 files named as Kubernetes names
// container logs (a 64-hex container id each: the worst case, as random
// names do not compress) fit one heartbeat, and read back whole; a small
// heartbeat stays plain JSON.
func TestLargeHeartbeatsAreCompressed(t *testing.T) {
	small := &Heartbeat{Agent: "h1", Files: []SeenFile{{Key: "k", Path: "/var/log/a.log"}}}
	data, err := MarshalHeartbeat(small)
	require.NoError(t, err)
	require.NotContains(t, string(data), "files_z")

	big := &Heartbeat{Agent: "h1"}
	const n = 10_000
	for i := range n {
		key := sha256.Sum256([]byte(fmt.Sprint("key", i)))
		id := sha256.Sum256([]byte(fmt.Sprint("container", i)))
		big.Files = append(big.Files, SeenFile{Key: hex.EncodeToString(key[:16]),
			Path: fmt.Sprintf("/var/log/containers/web-%05d-7d9f8c6b5-x2x4z_production_app-%x.log", i, id)})
	}
	data, err = MarshalHeartbeat(big)
	require.NoError(t, err)
	require.LessOrEqual(t, len(data), MaxHeartbeatBytes, "10,000 files fit")
	t.Logf("%d files: %d bytes (%d a file)", n, len(data), len(data)/n)
	var back Heartbeat
	require.NoError(t, Unmarshal("hb", data, &back))
	require.Equal(t, big.Files, back.Files)
	require.Nil(t, back.FilesZ)

	bad := []byte(`{"v":1,"agent":"h1","files":[],"files_z":"bm90IGd6aXA="}`)
	require.ErrorContains(t, Unmarshal("hb", bad, &back), "files_z")
}
