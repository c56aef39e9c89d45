package protocol

import (
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
