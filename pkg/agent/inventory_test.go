package agent

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/statefile"
	"github.com/logferry/logferry/pkg/topics"
)

// A scan that finds what the last one found sends the last snapshot again
// (the controller still hears of every scan) rather than copy every file
// into a new one; a file that grew makes a new one.
func TestQuietScanKeepsSnapshot(t *testing.T) {
	r := newScanRig(t, 3, rigOpts{parked: true})
	s1 := r.scan(t)
	s2 := r.scan(t)
	require.Same(t, s1, s2, "a scan that changed nothing made a new snapshot")
	require.Empty(t, r.inv.recent, "files listed are remembered by their listing, not copied into recent")

	name := filepath.Join(r.dir, "f000001.log")
	f, err := os.OpenFile(name, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("another line\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// The directory watcher's event drops the scanner's cached entry.
	var s3 *snapshot
	testenv.WaitFor(t, 10*time.Second, "a scan to see the file grown", func() bool {
		s3 = r.scan(t)
		return s3 != s2
	})
	grown := 0
	for key, f := range s3.files["t"] {
		if f.Path == name {
			grown++
			require.Greater(t, f.Size, s2.files["t"][key].Size)
			require.NotEmpty(t, s3.changed, "the parked file that grew is woken")
		}
	}
	require.Equal(t, 1, grown)
	// The view still shows the run parked at the old size (no controller
	// here): each scan says so again, with the listing it made once.
	s4 := r.scan(t)
	require.Equal(t, reflect.ValueOf(s3.files["t"]).Pointer(), reflect.ValueOf(s4.files["t"]).Pointer(), "the listing was copied")
}

// A file that left the globs is remembered for vanishedMemory after the
// last scan that saw it, then forgotten.
func TestVanishedRememberedFor(t *testing.T) {
	r := newScanRig(t, 2, rigOpts{shared: true}) // shared: a file gone from here is not counted lost
	now := time.Now()
	r.inv.now = func() time.Time { return now }
	s := r.scan(t)
	seenAt := now
	var key, path string
	for k, f := range s.files["t"] {
		key, path = k, f.Path
	}
	ref := fileRef{"t", key}

	// Moved to another directory: gone from the globs and from next to
	// where it was (else it would be listed as a rotated file to finish).
	now = now.Add(time.Minute)
	require.NoError(t, os.Rename(path, filepath.Join(t.TempDir(), "moved.log")))
	s = r.scan(t)
	require.NotContains(t, s.files["t"], key)
	f, ok := s.known(ref)
	require.True(t, ok, "a file that left the globs is remembered")
	require.Equal(t, path, f.Path)

	now = seenAt.Add(vanishedMemory)
	s = r.scan(t)
	_, ok = s.known(ref)
	require.True(t, ok, "remembered for vanishedMemory after it was last seen")

	now = now.Add(time.Millisecond)
	s = r.scan(t)
	_, ok = s.known(ref)
	require.False(t, ok, "forgotten once vanishedMemory passed since it was last seen")
	require.Empty(t, r.inv.recent)
	require.Len(t, s.files["t"], 1)
}

// The files of a topic no longer scanned (its directory entry became
// invalid) stay listed, but are not seen either: after vanishedMemory
// they are forgotten, and their state file entries go with them.
func TestUnscannedTopicForgotten(t *testing.T) {
	r := newScanRig(t, 2, rigOpts{stateDir: t.TempDir()})
	inv := r.inv
	now := time.Now()
	inv.now = func() time.Time { return now }
	s := r.scan(t)
	for key, f := range s.files["t"] {
		inv.a.local.Set("t", key, statefile.Entry{Path: f.Path, Identity: f.Identity})
	}
	// Another topic keeps the scans going.
	inv.topics["u"] = topics.Entry{Name: "u", Config: topics.Config{Paths: []string{filepath.Join(r.dir, "u", "*.log")}}}
	inv.topics["t"] = topics.Entry{Name: "t", Err: errors.New("invalid")}

	now = now.Add(vanishedMemory)
	s = r.scan(t)
	require.Len(t, s.files["t"], 2)
	require.Len(t, inv.a.local.Topic("t"), 2, "remembered for vanishedMemory")

	now = now.Add(time.Millisecond)
	s = r.scan(t)
	require.Len(t, s.files["t"], 2, "still listed")
	require.Empty(t, inv.a.local.Topic("t"), "not seen for vanishedMemory: forgotten")
	for key := range s.files["t"] {
		_, remembered := inv.remembered(fileRef{"t", key})
		require.False(t, remembered)
	}
}

// With several topics, a scan of each looks at its own runs (through an
// index of the view, built once per view): a parked file that grew is
// woken in its topic.
func TestScanRunsByTopic(t *testing.T) {
	r := newScanRig(t, 2, rigOpts{})
	inv := r.inv
	for _, name := range []string{"a.log", "b.log"} {
		mk := filepath.Join(r.dir, "u", name)
		require.NoError(t, os.MkdirAll(filepath.Dir(mk), 0o755))
		require.NoError(t, os.WriteFile(mk, []byte(header(name)+"one line\n"), 0o644))
	}
	inv.topics["u"] = topics.Entry{Name: "u", Config: topics.Config{Paths: []string{filepath.Join(r.dir, "u", "*.log")}}}
	s := r.scan(t)
	require.Len(t, s.files["u"], 2)
	r.park(s)
	require.Same(t, s, r.scan(t))
	idx := inv.idx
	require.NotNil(t, idx)
	r.scan(t)
	require.Same(t, idx, inv.idx, "the index is built once per view")

	grow := filepath.Join(r.dir, "u", "b.log")
	f, err := os.OpenFile(grow, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("another line\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	testenv.WaitFor(t, 10*time.Second, "a scan to see the file grown", func() bool {
		s = r.scan(t)
		return len(s.changed) > 0
	})
	require.Len(t, s.changed, 1)
	for ref, path := range s.changed {
		require.Equal(t, "u", ref.topic)
		require.Equal(t, grow, path)
	}
}

// TestListingKeptOnlyWhenTheScanFoundTheSame: a listing is kept only when
// the scan found each of its files as the last scan did; a file that was
// an extra file last time (found by the directory watcher, the old file
// renamed away meanwhile) is a change, and so is a path reported twice.
func TestListingKeptOnlyWhenTheScanFoundTheSame(t *testing.T) {
	a := protocol.SeenFile{Key: "ka", Path: "/d/a.log", Size: 1}
	b := protocol.SeenFile{Key: "kb", Path: "/d/b.log", Size: 2}
	prev := &listing{files: map[string]protocol.SeenFile{"ka": a, "kb": b}, extra: map[string]protocol.SeenFile{"kb": b}}

	same := buildListing(prev, []protocol.SeenFile{a})
	same.add(b) // still listed without being found
	l, unchanged := same.listing()
	require.True(t, unchanged)
	require.Same(t, prev, l)

	// a renamed away, b now found by the scan: one file, as before, but
	// not the same one.
	moved := buildListing(prev, []protocol.SeenFile{b})
	l, unchanged = moved.listing()
	require.False(t, unchanged)
	require.Equal(t, map[string]protocol.SeenFile{"kb": b}, l.files)
	require.Empty(t, l.extra)

	prev = &listing{files: map[string]protocol.SeenFile{"ka": a, "kb": b}}
	twice := buildListing(prev, []protocol.SeenFile{a, a})
	l, unchanged = twice.listing()
	require.False(t, unchanged, "a path reported twice is not what the last scan found")
	require.Equal(t, map[string]protocol.SeenFile{"ka": a}, l.files)
}

// TestIndexGivesEachTopicItsOwn: with several topics served, a topic's
// runs and active assignments come from the view's index, and are the
// same as a walk of the whole view gives (one topic: no index).
func TestIndexGivesEachTopicItsOwn(t *testing.T) {
	v := &runView{runs: map[fileRef]runInfo{}, assigned: map[fileRef]bool{}}
	for _, topic := range []string{"t1", "t2"} {
		for _, f := range []string{"a", "b", "c"} {
			ref := fileRef{topic, topic + f}
			v.runs[ref] = runInfo{path: "/" + ref.file}
			v.assigned[ref] = f != "c" // c is revoking
		}
	}
	collect := func(inv *inventory, topic string) (runs, active []string) {
		for ref, ri := range inv.runsOf(v, topic) {
			require.Equal(t, "/"+ref.file, ri.path)
			runs = append(runs, ref.file)
		}
		for ref := range inv.activeOf(v, topic) {
			active = append(active, ref.file)
		}
		slices.Sort(runs)
		slices.Sort(active)
		return runs, active
	}
	two := &inventory{topics: map[string]topics.Entry{"t1": {}, "t2": {}}}
	one := &inventory{topics: map[string]topics.Entry{"t2": {}}}
	runs, active := collect(two, "t2")
	require.NotNil(t, two.idx, "indexed")
	require.Equal(t, []string{"t2a", "t2b", "t2c"}, runs)
	require.Equal(t, []string{"t2a", "t2b"}, active)
	walkedRuns, walkedActive := collect(one, "t2")
	require.Nil(t, one.idx)
	require.Equal(t, walkedRuns, runs)
	require.Equal(t, walkedActive, active)
}
