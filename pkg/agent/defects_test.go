package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/topics"
)

// withFaults gives the agent a client of its own whose requests the test
// can make fail.
func (e *env) withFaults() (agentOpt, *testenv.KVFaults) {
	cli := e.etcd.Client()
	f := testenv.InjectKVFaults(cli)
	return func(c *Config, _ *ship.Config) { c.Client = cli }, f
}

// TestFailedReleaseKeepsItsFinalCheckpoint: a release whose Txn fails on an
// etcd error is tried again with the same run, so it still writes the final
// offset (no periodic checkpoint is written in this test: only the release
// can have written it).
func TestFailedReleaseKeepsItsFinalCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.write("r.log", header("r"))
	e.writeLines("r.log", 0, 300)
	e.putTopic("rel", topics.Config{Paths: []string{e.dir + "/r.log"}, Shared: true})
	opt, faults := e.withFaults()
	ag := e.startAgent("h1", opt, func(c *Config, _ *ship.Config) { c.CheckpointInterval = time.Hour })
	f := e.waitSeen("rel", "h1", "r.log")
	k := e.assign("rel", "h1", f)
	e.waitRecords("rel", 301, 20*time.Second)

	faults.FailDeleteTxns(1)
	e.revoke(k, f, "h2")
	testenv.WaitFor(t, 15*time.Second, "h1 to release after a failed attempt", func() bool { return !e.exists(k) })
	require.Equal(t, 1, faults.Failed(), "the first release Txn failed")
	require.Equal(t, 1.0, counterValue(t, ag.reg, "logagent_releases_total", "error"))
	require.Equal(t, 1.0, counterValue(t, ag.reg, "logagent_releases_total", "released"))
	cp, ok := e.checkpoint("rel", f.Key)
	require.True(t, ok, "the retried release wrote the final offset")
	require.Equal(t, fileSize(t, e.path("r.log")), cp.Offset)
}

// TestLostBytesWaitForTheCheckpoint: a deleted local file's lost bytes are
// its size minus its checkpoint. While the checkpoint cannot be read, none
// are counted (not the whole file); once it can, exactly the difference.
func TestLostBytesWaitForTheCheckpoint(t *testing.T) {
	e := newEnv(t)
	e.write("gone.log", header("gone"))
	e.writeLines("gone.log", 0, 100)
	size := fileSize(t, e.path("gone.log"))
	e.putTopic("lc", topics.Config{Paths: []string{e.dir + "/gone.log"}})
	opt, faults := e.withFaults()
	ag := e.startAgent("h1", opt)
	f := e.waitSeen("lc", "h1", "gone.log")
	// Shipped up to byte 200, as far as etcd knows.
	v, err := protocol.Marshal(&protocol.Checkpoint{Offset: 200, Identity: f.Identity, Path: f.Path, Agent: "h1", Size: size})
	require.NoError(t, err)
	okey := e.ks.Offset("lc", f.Key)
	_, err = e.cli.Put(context.Background(), okey, string(v))
	require.NoError(t, err)

	faults.FailGets(func(key string) bool { return key == okey })
	require.NoError(t, os.Remove(e.path("gone.log")))
	scans := histogramCount(t, ag.reg, "logagent_scan_duration_seconds")
	testenv.WaitFor(t, 10*time.Second, "two scans that could not read the checkpoint", func() bool {
		return faults.Failed() >= 2 && histogramCount(t, ag.reg, "logagent_scan_duration_seconds") >= scans+2
	})
	require.Zero(t, counterValue(t, ag.reg, "logagent_lost_bytes_total", ""), "counted without its checkpoint")

	faults.FailGets(nil)
	testenv.WaitFor(t, 10*time.Second, "the lost bytes counted", func() bool {
		return counterValue(t, ag.reg, "logagent_lost_bytes_total", "") > 0
	})
	require.Equal(t, float64(size-200), counterValue(t, ag.reg, "logagent_lost_bytes_total", ""))
}

// TestAssignedFileDeletedWhileDownCountedAfterReadError: an assigned file
// deleted while the agent was down is counted once its checkpoint can be
// read, also when the first reads fail.
func TestAssignedFileDeletedWhileDownCountedAfterReadError(t *testing.T) {
	e := newEnv(t)
	f, size, cp := e.deletedWhileDown()
	opt, faults := e.withFaults()
	okey := e.ks.Offset("app", f.Key)
	faults.FailGets(func(key string) bool { return key == okey }) // the file's own checkpoint, not the topic's list
	ag := e.startAgent("h1", opt)
	scans := histogramCount(t, ag.reg, "logagent_scan_duration_seconds")
	testenv.WaitFor(t, 10*time.Second, "scans that could not read the checkpoint", func() bool {
		return faults.Failed() >= 2 && histogramCount(t, ag.reg, "logagent_scan_duration_seconds") >= scans+2
	})
	require.Zero(t, counterValue(t, ag.reg, "logagent_lost_bytes_total", ""))
	faults.FailGets(nil)
	testenv.WaitFor(t, 10*time.Second, "the deleted file's bytes counted", func() bool {
		return counterValue(t, ag.reg, "logagent_lost_bytes_total", "") > 0
	})
	require.Equal(t, float64(size-cp.Offset), counterValue(t, ag.reg, "logagent_lost_bytes_total", ""))
}

// TestUnlinkedHeldFileCountedOnce: a local file the directory watcher held,
// unlinked before anyone read it, is lost once: the expiry of its
// descriptor and the scan that misses it both notice, in the same scan.
func TestUnlinkedHeldFileCountedOnce(t *testing.T) {
	old := heldFor
	heldFor = 0 // every held file expires at the next scan
	t.Cleanup(func() { heldFor = old })
	e := newEnv(t)
	cfg := topics.Config{Paths: []string{e.dir + "/*.log"}}
	e.putTopic("held", cfg)
	ag := e.startAgent("h1", func(c *Config, _ *ship.Config) { c.ScanInterval = time.Hour })
	testenv.WaitFor(t, 10*time.Second, "the first scan", func() bool {
		return histogramCount(t, ag.reg, "logagent_scan_duration_seconds") > 0
	})
	e.write("new.log", header("new"))
	e.writeLines("new.log", 0, 20)
	size := fileSize(t, e.path("new.log"))
	testenv.WaitFor(t, 10*time.Second, "the watcher to hold the new file", func() bool {
		_, ok := e.heartbeat("held", "h1")
		return ok && gaugeValue(t, ag.reg, "logagent_files_held") == 1
	})
	require.NoError(t, os.Remove(e.path("new.log")))
	scans := histogramCount(t, ag.reg, "logagent_scan_duration_seconds")
	e.putTopic("held", cfg) // a topic change scans at once
	testenv.WaitFor(t, 10*time.Second, "a scan after the unlink", func() bool {
		return histogramCount(t, ag.reg, "logagent_scan_duration_seconds") > scans
	})
	require.Equal(t, float64(size), counterValue(t, ag.reg, "logagent_lost_bytes_total", ""), "counted once")
}

// TestAckReadsPathWhileItMoves: the controller moves a run's path (the file
// was found under another name) while the shipper's acks read it; under
// -race this fails if either touches it without the run's lock.
func TestAckReadsPathWhileItMoves(t *testing.T) {
	e := newEnv(t)
	ra := e.startAgent("h1")
	fr := newFileRun("t", "f", "k", 1, "/p0", protocol.FileIdentity{}, &topics.Config{KafkaTopic: "t"})
	s := newLineSink(ra.a, fr)
	defer s.close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			fr.setPath(fmt.Sprintf("/p%d", i))
		}
	}()
	for i := range 200 {
		s.Ack(uint64(i), &ship.RejectedError{Topic: "t", Reason: "test", Err: ship.ErrRejected})
	}
	<-done
	require.True(t, strings.HasPrefix(fr.pathNow(), "/p"))
}

// TestTenThousandFilesFitTheHeartbeat: one topic with 10,000 files on one
// host, named as long as Kubernetes' container logs, lists every one of
// them in its heartbeat (it used to hold about 4,000 and leave the rest
// out, never to be shipped).
func TestTenThousandFilesFitTheHeartbeat(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 files")
	}
	e := newEnv(t)
	sub := e.path("many")
	require.NoError(t, os.Mkdir(sub, 0o755))
	const n = 10_000
	for i := range n {
		name := fmt.Sprintf("web-%05d-7d9f8c6b5-x2x4z_production_app-%064d.log", i, i) // as long as Kubernetes' names
		require.NoError(t, os.WriteFile(sub+"/"+name, []byte(header(name)), 0o644))
	}
	e.putTopic("many", topics.Config{Paths: []string{sub + "/*.log"}})
	e.startAgent("h1", func(c *Config, _ *ship.Config) { c.ScanInterval = time.Second; c.NoDirWatch = true })
	var hb protocol.Heartbeat
	testenv.WaitFor(t, 60*time.Second, "the heartbeat to list every file", func() bool {
		var ok bool
		hb, ok = e.heartbeat("many", "h1")
		return ok && len(hb.Files)+hb.Truncated == n
	})
	require.Zero(t, hb.Truncated, "files left out of the heartbeat")
	require.Len(t, hb.Files, n)
}
