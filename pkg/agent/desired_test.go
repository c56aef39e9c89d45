package agent

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

func TestDesired(t *testing.T) {
	ref := fileRef{"web", "f1"}
	active := map[fileRef]assignment{ref: {key: "/assign/h1/web/f1", createRev: 7, value: protocol.Assignment{State: protocol.StateActive}}}
	revoking := map[fileRef]assignment{ref: {key: "/assign/h1/web/f1", createRev: 7, value: protocol.Assignment{State: protocol.StateRevoking}}}
	cfg := topics.Config{Paths: []string{"/var/log/*.log"}, KafkaTopic: "web"}
	ok := map[string]topics.Entry{"web": {Name: "web", Config: cfg, ModRevision: 3}}
	paused := map[string]topics.Entry{"web": {Name: "web", Config: topics.Config{Paused: true}, ModRevision: 4}}
	seen := protocol.SeenFile{Key: "f1", Path: "/var/log/a.log", Size: 10}
	listed := &snapshot{files: map[string]map[string]protocol.SeenFile{ref.topic: {ref.file: seen}}}
	remembered := &snapshot{recent: map[fileRef]protocol.SeenFile{ref: seen}}
	refused := &snapshot{refused: map[string]bool{"web": true}, files: map[string]map[string]protocol.SeenFile{ref.topic: {ref.file: seen}}}

	for _, tc := range []struct {
		name    string
		assigns map[fileRef]assignment
		tops    map[string]topics.Entry
		inv     *snapshot
		want    map[fileRef]want
	}{
		{"no assignment, no run", nil, ok, listed, map[fileRef]want{}},
		{"assigned and listed: tail it", active, ok, listed, map[fileRef]want{ref: {kind: wantTail, assignKey: "/assign/h1/web/f1",
			createRev: 7, cfg: cfg, cfgRev: 3, file: seen, known: true}}},
		{"assigned and remembered after it left the globs: tail it", active, ok, remembered, map[fileRef]want{ref: {kind: wantTail,
			assignKey: "/assign/h1/web/f1", createRev: 7, cfg: cfg, cfgRev: 3, file: seen, known: true}}},
		{"assigned, unknown here: no file to read", active, ok, &snapshot{}, map[fileRef]want{ref: {kind: wantTail,
			assignKey: "/assign/h1/web/f1", createRev: 7, cfg: cfg, cfgRev: 3}}},
		{"no snapshot yet", active, ok, nil, map[fileRef]want{ref: {kind: wantTail, assignKey: "/assign/h1/web/f1", createRev: 7, cfg: cfg, cfgRev: 3}}},
		{"revoking: release, whatever the topic", revoking, nil, nil, map[fileRef]want{ref: {kind: wantRelease,
			assignKey: "/assign/h1/web/f1", createRev: 7}}},
		{"paused topic", active, paused, listed, map[fileRef]want{ref: {kind: wantPause, assignKey: "/assign/h1/web/f1", createRev: 7}}},
		{"topic gone", active, nil, listed, map[fileRef]want{ref: {kind: wantPause, assignKey: "/assign/h1/web/f1", createRev: 7}}},
		{"topic refused here", active, ok, refused, map[fileRef]want{ref: {kind: wantPause, assignKey: "/assign/h1/web/f1", createRev: 7}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, desired(tc.assigns, tc.tops, tc.inv))
		})
	}
}

func TestRunStateTransitions(t *testing.T) {
	fr := newFileRun("t", "f", "k", 1, "/p", protocol.FileIdentity{}, &topics.Config{})
	require.True(t, fr.writable.Load())
	for _, step := range []runState{stateTailing, stateFinished, stateIdle, stateTailing, stateReleasing} {
		fr.to(step)
	}
	require.False(t, fr.writable.Load(), "a releasing run writes its offset in the release Txn only")
	fr.to(stateIdle) // the release failed: retried with the same run
	require.True(t, fr.writable.Load())
	fr.to(stateFenced)
	require.False(t, fr.writable.Load())
	require.Panics(t, func() { fr.to(stateTailing) }, "fenced is terminal")
	gone := newFileRun("t", "g", "k", 1, "/p", protocol.FileIdentity{}, &topics.Config{})
	gone.to(stateTailing)
	gone.to(stateGone)
	require.Panics(t, func() { gone.to(stateTailing) }, "a gone file is never read again under its identity")
}
