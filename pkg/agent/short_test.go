package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/discovery"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/statefile"
	"github.com/logferry/logferry/pkg/topics"
)

// Files shorter than the fingerprint (a cron job's log, a one-line status
// file, a file created empty) are shipped, each line once, and keep their
// key and offset as they grow past the fingerprint, across restarts: from
// etcd's checkpoints, or from the local state file.
func TestShortFilesShipEveryLineOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		local bool
	}{{"checkpoints in etcd", false}, {"local state file", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var opts []agentOpt
			if tc.local {
				dir := t.TempDir()
				opts = append(opts, func(c *Config, _ *ship.Config) { c.StateDir = dir })
			}
			e.write("one.log", "the only line\n")
			e.write("three.log", "a\nb\nc\n")
			e.write("empty.log", "")
			e.putTopic("cron", topics.Config{Paths: []string{e.dir + "/*.log"}})
			ag := e.startAgent("h1", opts...)
			keys := map[string]string{}
			seen := func(name string) {
				f := e.waitSeen("cron", "h1", name)
				keys[name] = f.Key
				e.assign("cron", "h1", f)
			}
			seen("one.log")
			seen("three.log")
			requireEachOnce(t, e.waitRecords("cron", 4, 20*time.Second), 4, "short files")
			emptyListed := func() bool {
				st, _ := e.agentStatus("h1")
				for _, p := range st.Problems {
					if p.Kind == discovery.KindEmpty && strings.Contains(p.Error, e.path("empty.log")) {
						return true
					}
				}
				return false
			}
			testenv.WaitFor(t, 10*time.Second, "the empty file named in the status", emptyListed)
			e.write("empty.log", "written later\n")
			seen("empty.log")
			testenv.WaitFor(t, 10*time.Second, "no empty file in the status once written", func() bool { return !emptyListed() })
			requireEachOnce(t, e.waitRecords("cron", 5, 20*time.Second), 5, "a file created empty, then written")

			// Past the fingerprint length: the same key, nothing read twice.
			grow := strings.Repeat("more output\n", 2*testFP/12+1)
			for name := range keys {
				e.write(name, grow)
			}
			lines := 5 + 3*strings.Count(grow, "\n")
			requireEachOnce(t, e.waitRecords("cron", lines, 20*time.Second), lines, "grown past the fingerprint")
			e.requireKeys("cron", "h1", keys)

			// A restart: the grown files are still the files they were.
			waitCheckpointsAtEnd(t, e, "cron", keys)
			require.NoError(t, ag.stop())
			for name := range keys {
				e.write(name, "after the restart\n")
			}
			lines += 3
			e.startAgent("h1", opts...)
			e.requireKeys("cron", "h1", keys)
			requireEachOnce(t, e.waitRecords("cron", lines, 20*time.Second), lines, "after a restart")
			recs := e.records("cron")
			for _, r := range recs {
				require.Equal(t, keys[strings.TrimPrefix(r.Headers["path"], e.dir+"/")], r.Headers["file"], "one key per file")
			}
			e.byFile(recs)
		})
	}
}

// requireKeys waits until agent's heartbeat lists each file under its key,
// and under no other.
func (e *env) requireKeys(topic, agent string, keys map[string]string) {
	e.t.Helper()
	testenv.WaitFor(e.t, 10*time.Second, "each file listed under its first key only", func() bool {
		hb, ok := e.heartbeat(topic, agent)
		if !ok {
			return false
		}
		got := map[string]string{}
		for _, f := range hb.Files {
			got[strings.TrimPrefix(f.Path, e.dir+"/")] = f.Key
		}
		for name, key := range keys {
			if got[name] != key {
				return false
			}
		}
		return len(hb.Files) == len(keys)
	})
}

func waitCheckpointsAtEnd(t *testing.T, e *env, topic string, keys map[string]string) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "checkpoints at the end of every file", func() bool {
		for name, key := range keys {
			cp, ok := e.checkpoint(topic, key)
			if !ok || cp.Offset != fileSize(t, e.path(name)) {
				return false
			}
		}
		return true
	})
}

// On a shared topic a short file still being written is not identified
// yet (members would hash different lengths), and the agent's status says
// so; once it is quiet it is shipped.
func TestShortSharedFileShipsOnceQuiet(t *testing.T) {
	e := newEnv(t)
	e.write("status.log", "ok\n")
	e.putTopic("shared", topics.Config{Paths: []string{e.dir + "/status.log"}, Shared: true})
	e.startAgent("h1")
	testenv.WaitFor(t, 10*time.Second, "the file named in the agent's status", func() bool {
		st, ok := e.agentStatus("h1")
		if !ok {
			return false
		}
		for _, p := range st.Problems {
			if p.Kind == discovery.KindUnidentified && p.Path == e.path("status.log") {
				return true
			}
		}
		return false
	})
	f := e.waitSeen("shared", "h1", "status.log")
	e.assign("shared", "h1", f)
	recs := e.waitRecords("shared", 1, 20*time.Second)
	require.Equal(t, "ok", string(recs[0].Value))
	testenv.WaitFor(t, 10*time.Second, "the problem cleared", func() bool {
		st, _ := e.agentStatus("h1")
		for _, p := range st.Problems {
			if p.Kind == discovery.KindUnidentified {
				return false
			}
		}
		return true
	})
}

// A short file's identity is on disk before any of its lines is shipped:
// nothing could compute it again once the file grew, so a crash before the
// first checkpoint would make it another file, shipped again under another
// key. Here no periodic checkpoint runs during the test.
func TestShortIdentitySavedBeforeShipping(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	e.write("job.log", "started\n")
	e.putTopic("cron", topics.Config{Paths: []string{e.dir + "/job.log"}})
	e.startAgent("h1", func(c *Config, _ *ship.Config) {
		c.StateDir, c.CheckpointInterval, c.EtcdCheckpointInterval = dir, time.Hour, time.Hour
	})
	f := e.waitSeen("cron", "h1", "job.log")
	e.assign("cron", "h1", f)
	e.waitRecords("cron", 1, 20*time.Second)
	saved, err := statefile.Open(dir, "h1")
	require.NoError(t, err)
	got, ok := saved.Get("cron", f.Key)
	require.True(t, ok, "the identity is in the state file")
	require.True(t, got.Identity.Partial)
	require.Equal(t, 8, got.Identity.Bytes)
}
