package keyspace

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRoot(t *testing.T) {
	for _, tc := range []struct {
		root, want string
		ok         bool
	}{
		{"", "", true},
		{"/", "", true},
		{"/prod", "/prod", true},
		{"/prod/", "/prod", true},
		{"/a/b", "/a/b", true},
		{"prod", "", false},
		{"/a//b", "", false},
		{"/a b", "", false},
	} {
		t.Run(tc.root, func(t *testing.T) {
			s, err := New(tc.root)
			if !tc.ok {
				require.ErrorIs(t, err, ErrBadRoot)
				require.Contains(t, err.Error(), tc.root)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, s.Root())
		})
	}
}

func TestParse(t *testing.T) {
	for _, root := range []string{"", "/prod", "/a/b"} {
		s, err := New(root)
		require.NoError(t, err)
		for _, tc := range []struct {
			key  string
			want Key
		}{
			{"/topics/t1", Key{Kind: KindTopic, Topic: "t1"}},
			{"/topics/t10", Key{Kind: KindTopic, Topic: "t10"}},
			{"/topics/t1/10.0.0.1", Key{Kind: KindHeartbeat, Topic: "t1", Agent: "10.0.0.1"}},
			{"/topics/t10/fe80::1", Key{Kind: KindHeartbeat, Topic: "t10", Agent: "fe80::1"}},
			{"/assign/10.0.0.1/web.access/ab12-cd", Key{Kind: KindAssign, Agent: "10.0.0.1", Topic: "web.access", File: "ab12-cd"}},
			{"/offsets/web_access/ab12", Key{Kind: KindOffset, Topic: "web_access", File: "ab12"}},
			{"/coordinator/election/694d7a1b2c", Key{Kind: KindElection, Candidate: "694d7a1b2c"}},
			{"/status/coordinator", Key{Kind: KindCoordinatorStatus}},
			{"/status/topics/t1", Key{Kind: KindTopicStatus, Topic: "t1"}},
			{"/status/agents/host-1", Key{Kind: KindAgentStatus, Agent: "host-1"}},
		} {
			t.Run(root+tc.key, func(t *testing.T) {
				got, err := s.Parse(root + tc.key)
				require.NoError(t, err)
				require.Equal(t, tc.want, got)
				back, err := s.Build(got)
				require.NoError(t, err)
				require.Equal(t, root+tc.key, back, "Build(Parse(k)) != k")
			})
		}
	}
}

func TestParseJunk(t *testing.T) {
	s, err := New("/prod")
	require.NoError(t, err)
	for _, key := range []string{
		"",
		"/",
		"/topics/t1",            // outside the root
		"/prod",                 // the root itself
		"/prod/",                // nothing after it
		"/prodx/topics/t1",      // a root that only shares a prefix
		"/prod/topics",          // directory without name
		"/prod/topics/",         // empty topic
		"/prod/topics/t1/",      // empty agent
		"/prod/topics/t1/a/b",   // too deep
		"/prod/topics/bad name", // space
		"/prod/topics/..",       // reserved
		"/prod/topics/" + strings.Repeat("x", 250),
		"/prod/topics/t1/a b",
		"/prod/assign/a/t1",          // missing file
		"/prod/assign/a/t1/f/g",      // too deep
		"/prod/assign/a/t1/f:x",      // ':' not allowed in file keys
		"/prod/offsets/t1",           // missing file
		"/prod/offsets/t1/f/x",       // too deep
		"/prod/coordinator/election", // missing candidate
		"/prod/coordinator/other/x",
		"/prod/status/nope",
		"/prod/status/topics/",
		"/prod/status/agents/a/b",
		"/prod/unknown/x",
		"prod/topics/t1",
	} {
		t.Run(key, func(t *testing.T) {
			k, err := s.Parse(key)
			require.Error(t, err, "parsed as %+v", k)
			require.ErrorIs(t, err, ErrBadKey)
			require.Contains(t, err.Error(), "\""+key+"\"", "error must quote the key")
		})
	}
}

func TestParseSegmentErrors(t *testing.T) {
	var s Space
	_, err := s.Parse("/topics/t1/bad*agent")
	require.ErrorIs(t, err, ErrBadAgent)
	_, err = s.Parse("/offsets/bad$topic/f")
	require.ErrorIs(t, err, ErrBadTopic)
	_, err = s.Parse("/assign/a/t/" + strings.Repeat("f", MaxFileKeyLen+1))
	require.ErrorIs(t, err, ErrBadFileKey)
}

func TestPrefixesEndInSlash(t *testing.T) {
	s, err := New("/r")
	require.NoError(t, err)
	for _, p := range []string{
		s.TopicsPrefix(), s.HeartbeatsPrefix("t1"), s.AssignPrefix(), s.AgentAssignPrefix("a"),
		s.OffsetsPrefix(), s.TopicOffsetsPrefix("t1"), s.ElectionPrefix(), s.StatusPrefix(),
		s.TopicStatusPrefix(), s.AgentStatusPrefix(),
	} {
		require.True(t, strings.HasSuffix(p, "/"), p)
		require.True(t, strings.HasPrefix(p, "/r/"), p)
	}
	// The reason for the rule: t1's heartbeat prefix must not match t10's keys.
	require.False(t, strings.HasPrefix(s.Heartbeat("t10", "a"), s.HeartbeatsPrefix("t1")))
	require.False(t, strings.HasPrefix(s.Topic("t10"), s.HeartbeatsPrefix("t1")))
}

func TestBuildRejectsBadSegments(t *testing.T) {
	var s Space
	for _, k := range []Key{
		{Kind: KindTopic, Topic: ""},
		{Kind: KindHeartbeat, Topic: "t", Agent: "a/b"},
		{Kind: KindAssign, Agent: "a", Topic: "t", File: ""},
		{Kind: KindOffset, Topic: "t", File: "a/b"},
		{Kind: KindElection},
		{Kind: Kind(99)},
	} {
		_, err := s.Build(k)
		require.Error(t, err, "%+v", k)
	}
}

func TestValidateTopic(t *testing.T) {
	require.NoError(t, ValidateTopic("a"))
	require.NoError(t, ValidateTopic("A.b_c-9"))
	require.NoError(t, ValidateTopic(strings.Repeat("x", MaxTopicLen)))
	for _, bad := range []string{"", ".", "..", "a/b", "a b", "ä", strings.Repeat("x", MaxTopicLen+1)} {
		err := ValidateTopic(bad)
		require.Error(t, err, bad)
		require.True(t, errors.Is(err, ErrBadTopic))
	}
}
