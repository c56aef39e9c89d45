package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The previous format, as the builds before forward compatibility read it:
// strictly (unknown fields refused) and only at v=1. These copies are frozen
// on purpose: they stand for the old hosts of a fleet in mid-upgrade, and
// must not follow changes to this package's types.
type (
	oldIdentity struct {
		Fingerprint string `json:"fingerprint"`
		Inode       uint64 `json:"inode"`
		Device      uint64 `json:"device,omitempty"`
	}
	oldSeenFile struct {
		Key      string      `json:"key"`
		Path     string      `json:"path"`
		Size     int64       `json:"size"`
		Identity oldIdentity `json:"identity"`
	}
	oldHeartbeat struct {
		V         int           `json:"v"`
		Agent     string        `json:"agent"`
		Version   string        `json:"version"`
		Started   time.Time     `json:"started"`
		Files     []oldSeenFile `json:"files"`
		Truncated int           `json:"truncated,omitempty"`
	}
	oldAssignment struct {
		V        int    `json:"v"`
		State    string `json:"state"`
		Path     string `json:"path"`
		Leader   string `json:"leader"`
		Revoking string `json:"revoking,omitempty"`
	}
	oldCheckpoint struct {
		V        int         `json:"v"`
		Offset   int64       `json:"offset"`
		Identity oldIdentity `json:"identity"`
		Path     string      `json:"path"`
		Agent    string      `json:"agent"`
		Size     int64       `json:"size"`
		Updated  time.Time   `json:"updated"`
	}
	oldProblem struct {
		Topic string    `json:"topic,omitempty"`
		Path  string    `json:"path,omitempty"`
		Kind  string    `json:"kind"`
		Error string    `json:"error"`
		Since time.Time `json:"since"`
	}
	oldAgentStatus struct {
		V         int          `json:"v"`
		Agent     string       `json:"agent"`
		Version   string       `json:"version"`
		Updated   time.Time    `json:"updated"`
		Problems  []oldProblem `json:"problems"`
		LostBytes int64        `json:"lost_bytes"`
	}
	oldCoordinatorStatus struct {
		V                    int       `json:"v"`
		Leader               string    `json:"leader"`
		Version              string    `json:"version"`
		LeaderSince          time.Time `json:"leader_since"`
		Updated              time.Time `json:"updated"`
		LastReconcile        time.Time `json:"last_reconcile"`
		LastReconcileSeconds float64   `json:"last_reconcile_seconds"`
		Revision             int64     `json:"revision"`
		Topics               int       `json:"topics"`
		InvalidTopics        int       `json:"invalid_topics"`
		Members              int       `json:"members"`
		Files                int       `json:"files"`
		Assignments          int       `json:"assignments"`
		PendingHandovers     int       `json:"pending_handovers"`
		JunkKeys             []JunkKey `json:"junk_keys,omitempty"`
		JunkCount            int       `json:"junk_count"`
	}
	oldTopicStatus struct {
		V           int            `json:"v"`
		Topic       string         `json:"topic"`
		Leader      string         `json:"leader"`
		Updated     time.Time      `json:"updated"`
		State       string         `json:"state"`
		Error       string         `json:"error,omitempty"`
		Shared      bool           `json:"shared"`
		Members     int            `json:"members"`
		Files       int            `json:"files"`
		Assigned    int            `json:"assigned"`
		Pending     int            `json:"pending"`
		Unassigned  int            `json:"unassigned"`
		Checkpoints int            `json:"checkpoints"`
		Load        map[string]int `json:"load,omitempty"`
		Problems    []string       `json:"problems,omitempty"`
	}
)

// oldRead decodes data as the previous builds did: unknown fields refused,
// v=1 only.
func oldRead(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	var head struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil || head.V != 1 {
		return fmt.Errorf("old reader: v=%d (%v)", head.V, err)
	}
	return nil
}

// sampleValues are one fully populated value of every kind this build
// writes, each paired with the previous format's type for it.
func sampleValues() []struct {
	name string
	v    Value
	old  func() any
	zero func() Value
} {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	id := FileIdentity{Fingerprint: "ab", Inode: 7, Device: 9}
	return []struct {
		name string
		v    Value
		old  func() any
		zero func() Value
	}{
		{"heartbeat", &Heartbeat{Agent: "10.0.0.1", Version: "v2", Started: t0, Truncated: 1,
			Files: []SeenFile{{Key: "k", Path: "/var/log/a", Size: 3, Identity: id}}},
			func() any { return &oldHeartbeat{} }, func() Value { return &Heartbeat{} }},
		{"assignment", &Assignment{State: StateRevoking, Path: "/p", Leader: "c1", Revoking: "b"},
			func() any { return &oldAssignment{} }, func() Value { return &Assignment{} }},
		{"checkpoint", &Checkpoint{Offset: 5, Identity: id, Path: "/p", Agent: "a", Size: 9, Updated: t0},
			func() any { return &oldCheckpoint{} }, func() Value { return &Checkpoint{} }},
		{"agent status", &AgentStatus{Agent: "a", Version: "v2", Updated: t0, LostBytes: 4,
			Problems: []Problem{{Topic: "t", Path: "/p", Kind: "unreadable", Error: "EACCES", Since: t0}}},
			func() any { return &oldAgentStatus{} }, func() Value { return &AgentStatus{} }},
		{"coordinator status", &CoordinatorStatus{Leader: "c1", Version: "v2", LeaderSince: t0, Updated: t0,
			LastReconcile: t0, LastReconcileSeconds: 0.5, Revision: 8, Topics: 1, InvalidTopics: 1, Members: 2,
			Files: 3, Assignments: 3, PendingHandovers: 1, JunkKeys: []JunkKey{{Key: "/x", Error: "bad"}}, JunkCount: 1},
			func() any { return &oldCoordinatorStatus{} }, func() Value { return &CoordinatorStatus{} }},
		{"topic status", &TopicStatus{Topic: "t", Leader: "c1", Updated: t0, State: TopicInvalid, Error: "paths",
			Shared: true, Members: 1, Files: 2, Assigned: 1, Pending: 1, Unassigned: 1, Checkpoints: 2,
			Load: map[string]int{"a": 1}, Problems: []string{"p"}},
			func() any { return &oldTopicStatus{} }, func() Value { return &TopicStatus{} }},
	}
}

// TestMixedFleet stands for a fleet in mid-upgrade. Values from a newer
// build, which carry fields this build has never heard of (at the top level
// and inside nested objects), are read, with every known field intact. And
// every value this build writes is read by the previous format's strict
// reader, so hosts not yet upgraded keep working.
func TestMixedFleet(t *testing.T) {
	for _, tc := range sampleValues() {
		t.Run(tc.name, func(t *testing.T) {
			data, err := Marshal(tc.v)
			require.NoError(t, err)

			require.NoError(t, oldRead(data, tc.old()), "a not yet upgraded host must read this build's %s: %s", tc.name, data)

			var fields map[string]any
			require.NoError(t, json.Unmarshal(data, &fields))
			fields["added_by_a_newer_build"] = map[string]any{"x": []int{1, 2}}
			if files, ok := fields["files"].([]any); ok {
				files[0].(map[string]any)["mtime"] = "2026-01-01T00:00:00Z"
			}
			newer, err := json.Marshal(fields)
			require.NoError(t, err)
			got := tc.zero()
			require.NoError(t, Unmarshal("/k", newer, got), "a newer build's %s must be read: %s", tc.name, newer)
			require.Equal(t, tc.v, got, "every known field survives the unknown ones")
		})
	}
}

// TestVersionRule pins the rule for v: the fields may grow, v may not. A
// value of another v is refused (it was written by a build that changed the
// format incompatibly), and so is a known field of the wrong type.
func TestVersionRule(t *testing.T) {
	for _, tc := range []struct{ data, want string }{
		{`{"v":2,"offset":1,"new":true}`, "v=2"},
		{`{"offset":1}`, "v=0"},
		{`{"v":1,"offset":"1","new":true}`, "offset"},
	} {
		var c Checkpoint
		err := Unmarshal("/offsets/t/f", []byte(tc.data), &c)
		require.ErrorContains(t, err, tc.want, tc.data)
	}
	var c Checkpoint
	require.NoError(t, Unmarshal("/offsets/t/f", []byte(`{"v":1,"offset":1,"new":{"deep":[1]}}`), &c))
	require.Equal(t, int64(1), c.Offset)
}
