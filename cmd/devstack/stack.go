package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/logferry/logferry/internal/devstack"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/topics"
)

// The demo's topics: one shared by every agent, one local to each (the
// agents share this machine, so each ships its own copy of the local files,
// as separate hosts would ship their own files).
const (
	demoTopic  = "demo"
	localTopic = "local"
)

// proc is one child process of the stack.
type proc struct {
	name   string
	listen string
	bin    string
	args   []string
	cmd    *exec.Cmd
	done   chan struct{}
	err    error
}

type stack struct {
	o             *options
	log           *slog.Logger
	dir           string
	logDir        string
	localDir      string
	tempDir       bool
	etcd          *devstack.Etcd
	kafka         *kfake.Cluster
	etcdEndpoints []string
	kafkaBrokers  []string
	cli           *clientv3.Client
	ks            keyspace.Space
	procs         []*proc
	written       atomic.Int64 // lines written to the shared topic's files
	writtenLocal  atomic.Int64 // lines written to the local topic's files
	lastShipped   map[string]float64
	lastView      time.Time
	kafkaPort     int
	storms        chan struct{} // a rotation storm for the writer
	adminClient   *kgo.Client   // for end offsets; see arrived
	admin         *kadm.Client
	kafkaDataDir  string
	chaos         chaosStats
}

type chaosStats struct {
	kills, brokerRestarts, failovers, storms int
	maxFailover                              time.Duration
}

func startStack(ctx context.Context, o *options, log *slog.Logger) (_ *stack, err error) {
	st := &stack{o: o, log: log, dir: o.dir, lastShipped: map[string]float64{}, storms: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	if st.dir == "" {
		if st.dir, err = os.MkdirTemp("", "logferry-demo-"); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		st.tempDir = true
	}
	st.logDir = filepath.Join(st.dir, "var", "log", "demo")
	st.localDir = filepath.Join(st.dir, "var", "log", "local")
	for _, d := range []string{st.logDir, st.localDir, filepath.Join(st.dir, "procs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if st.etcdEndpoints = o.etcd; len(st.etcdEndpoints) == 0 {
		st.etcd, err = devstack.StartEtcd(devstack.EtcdOptions{Dir: filepath.Join(st.dir, "etcd"), Logger: zap.NewNop()})
		if err != nil {
			return nil, err
		}
		st.etcdEndpoints = []string{st.etcd.Endpoint()}
	}
	if st.kafkaBrokers = o.kafka; len(st.kafkaBrokers) == 0 {
		if o.chaosEvery > 0 {
			// The broker is stopped and restarted by the faults: its log
			// must survive that.
			st.kafkaDataDir = filepath.Join(st.dir, "kafka")
		}
		st.kafka, err = devstack.StartKafka(devstack.KafkaOptions{Port: o.kafkaPort, Partitions: 3, DataDir: st.kafkaDataDir})
		if err != nil {
			return nil, fmt.Errorf("%w (is port %d taken? try --kafka-port 0)", err, o.kafkaPort)
		}
		st.kafkaBrokers = st.kafka.ListenAddrs()
		_, portStr, _ := net.SplitHostPort(st.kafkaBrokers[0])
		st.kafkaPort, _ = strconv.Atoi(portStr)
	}
	st.cli, err = clientv3.New(clientv3.Config{Endpoints: st.etcdEndpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	// The demo topic: every generated file, shared by all agents.
	store := topics.NewStore(st.cli, st.ks)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := store.Put(cctx, demoTopic, topics.Config{Paths: []string{st.logDir + "/*.log"}, Shared: true}); err != nil {
		return nil, fmt.Errorf("create topic %s: %w", demoTopic, err)
	}
	if o.localFiles > 0 {
		// The local topic's globs match rotated generations too (as a real
		// deployment's should): rotation storms create files that live
		// only milliseconds under their first name.
		if _, err := store.Put(cctx, localTopic, topics.Config{Paths: []string{st.localDir + "/*.log", st.localDir + "/*.log.[0-9]"}}); err != nil {
			return nil, fmt.Errorf("create topic %s: %w", localTopic, err)
		}
	}
	for i := 1; i <= o.coordinators; i++ {
		if err := st.spawn(fmt.Sprintf("coord-%d", i), filepath.Join(o.bin, "coordinator"),
			"--id", fmt.Sprintf("coord-%d", i), "--lease-ttl", "2s", "--handover-timeout", "10s"); err != nil {
			return nil, err
		}
	}
	for i := 1; i <= o.agents; i++ {
		id := fmt.Sprintf("127.0.0.%d", i+1)
		if err := st.spawn(id, filepath.Join(o.bin, "logagent"),
			"--id", id, "--kafka-brokers", strings.Join(st.kafkaBrokers, ","), "--allow-path", filepath.Dir(st.logDir),
			"--lease-ttl", "3s", "--scan-interval", "1s", "--fingerprint-bytes", "64", "--rotated-idle", "2s",
			"--kafka-compression", "none", "--state-dir", filepath.Join(st.dir, "var", "lib", "logagent-"+id)); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// spawn starts one process with the common flags; its output goes to a file.
func (st *stack) spawn(name, bin string, args ...string) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	args = append(args, "--etcd-endpoints", strings.Join(st.etcdEndpoints, ","), "--listen", listen)
	p := &proc{name: name, listen: listen, bin: bin, args: args}
	if err := st.start(p); err != nil {
		return err
	}
	st.procs = append(st.procs, p)
	return nil
}

// start runs p's command; its output is appended to its log file.
func (st *stack) start(p *proc) error {
	out, err := os.OpenFile(filepath.Join(st.dir, "procs", p.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("log file of %s: %w", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a Ctrl-C in the terminal reaches devstack,
	// which stops the children in order, not all at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start %s (%s): %w", p.name, p.bin, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.err = cmd, done, nil
	go func() {
		err := cmd.Wait()
		out.Close()
		p.err = err
		close(done)
	}()
	return nil
}

// freePort finds a free port below Linux's ephemeral range (32768 and up),
// so that a restarted process finds its port still free: an outgoing
// connection of another process never takes it meanwhile.
func freePort() (int, error) {
	for range 200 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("find a free port: none free in 20000-31999")
}

// run writes lines and shows the view until ctx is done.
func (st *stack) run(ctx context.Context, stdout io.Writer) error {
	var wg sync.WaitGroup
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	if st.o.writeFor > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(wctx, st.o.writeFor)
		defer cancel()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		st.writeLines(wctx)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var chaos <-chan time.Time
	if st.o.chaosEvery > 0 {
		ct := time.NewTicker(st.o.chaosEvery)
		defer ct.Stop()
		chaos = ct.C
	}
	seed := st.o.seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	if chaos != nil {
		fmt.Fprintf(stdout, "faults every %v, seed %d\n", st.o.chaosEvery, seed)
	}
	n := 0
	for {
		select {
		case <-ctx.Done():
			stopWriter()
			wg.Wait()
			return ctx.Err()
		case <-chaos:
			if err := st.fault(ctx, rng, stdout); err != nil {
				stopWriter()
				wg.Wait()
				return err
			}
		case <-tick.C:
			n++
			for _, p := range st.procs {
				select {
				case <-p.done:
					stopWriter()
					wg.Wait()
					return fmt.Errorf("%s exited: %v (see %s)", p.name, p.err, filepath.Join(st.dir, "procs", p.name+".log"))
				default:
				}
			}
			if st.o.view {
				st.show(ctx, stdout, true)
			} else if n%5 == 0 {
				st.show(ctx, stdout, false)
			}
		}
	}
}

// fault injects one fault: kill -9 and restart a process (a leading
// coordinator half the time, when it is a coordinator's turn), or stop and
// restart the broker.
func (st *stack) fault(ctx context.Context, rng *rand.Rand, w io.Writer) error {
	allowed := func(kind string) bool { return slices.Contains(st.o.faults, kind) }
	if allowed("storm") && st.o.localFiles > 0 && rng.IntN(6) == 0 {
		select {
		case st.storms <- struct{}{}:
			st.chaos.storms++
			fmt.Fprintf(w, "%s fault: rotation storm on the local topic's files\n", time.Now().Format("15:04:05"))
		default:
		}
		return nil
	}
	if allowed("broker") && st.kafka != nil && (!allowed("kill") || rng.IntN(5) == 0) {
		st.kafka.Close()
		k, err := devstack.StartKafka(devstack.KafkaOptions{Port: st.kafkaPort, Partitions: 3, DataDir: st.kafkaDataDir})
		if err != nil {
			return fmt.Errorf("restart broker: %w", err)
		}
		st.kafka = k
		st.chaos.brokerRestarts++
		fmt.Fprintf(w, "%s fault: broker stopped and restarted\n", time.Now().Format("15:04:05"))
		return nil
	}
	if !allowed("kill") {
		return nil
	}
	p := st.procs[rng.IntN(len(st.procs))]
	leader := st.leader(ctx)
	if strings.HasPrefix(p.name, "coord-") && rng.IntN(2) == 0 {
		for _, q := range st.procs {
			if q.name == leader {
				p = q
			}
		}
	}
	killedLeader := p.name == leader
	start := time.Now()
	_ = p.cmd.Process.Kill()
	<-p.done
	st.chaos.kills++
	if err := st.start(p); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s fault: kill -9 %s, restarted", start.Format("15:04:05"), p.name)
	if killedLeader {
		// Failover time: until a live coordinator other than the killed
		// term holds the leadership (the restarted one may win, too, once
		// the old lease is gone).
		poll := time.NewTicker(20 * time.Millisecond)
		defer poll.Stop()
		oldKey := st.leaderKey(ctx)
		for st.leaderKey(ctx) == oldKey && time.Since(start) < 60*time.Second && ctx.Err() == nil {
			<-poll.C
		}
		took := time.Since(start)
		st.chaos.failovers++
		st.chaos.maxFailover = max(st.chaos.maxFailover, took)
		msg += fmt.Sprintf("; new leader %s after %v", st.leader(ctx), took.Round(time.Millisecond))
	}
	fmt.Fprintln(w, msg)
	return nil
}

// leaderKey is the current leader's election key (changes with every term).
func (st *stack) leaderKey(ctx context.Context) string {
	resp, err := st.cli.Get(ctx, st.ks.ElectionPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Key)
}

// writeLines appends numbered lines to the demo files at --rate, and
// rename-rotates each file every --rotate-every.
func (st *stack) writeLines(ctx context.Context) {
	n := st.o.files + st.o.localFiles
	files := make([]*os.File, n)
	opened := make([]time.Time, n)
	seq := make([]int, n)
	// Files 0..files-1 belong to the shared topic, the rest to the local one.
	name := func(i int) string {
		if i < st.o.files {
			return fmt.Sprintf("app-%d", i)
		}
		return fmt.Sprintf("loc-%d", i-st.o.files)
	}
	counter := func(i int) *atomic.Int64 {
		if i < st.o.files {
			return &st.written
		}
		return &st.writtenLocal
	}
	open := func(i int) {
		dir := st.logDir
		if i >= st.o.files {
			dir = st.localDir
		}
		f, err := os.OpenFile(filepath.Join(dir, name(i)+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			st.log.Error("open demo file", "err", err)
			return
		}
		files[i], opened[i] = f, time.Now()
		// The first line is long enough to fingerprint the file at once.
		fmt.Fprintf(f, "# logferry demo file %s opened %s %s\n", name(i), opened[i].Format(time.RFC3339Nano), strings.Repeat("-", 32))
		counter(i).Add(1)
	}
	for i := range files {
		open(i)
	}
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	if st.o.rate == 0 {
		<-ctx.Done()
		return
	}
	const tickEvery = 10 * time.Millisecond
	perTick := float64(st.o.rate) * tickEvery.Seconds()
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	rotate := func(i int) {
		// logrotate's "rotate 3": app.log -> app.log.1 -> ... -> app.log.3,
		// the oldest deleted; a rotated file lives three rotation periods,
		// so agents restarted meanwhile finish it.
		files[i].Close()
		path := files[i].Name()
		for g := 3; g >= 1; g-- {
			from := path
			if g > 1 {
				from = fmt.Sprintf("%s.%d", path, g-1)
			}
			if err := os.Rename(from, fmt.Sprintf("%s.%d", path, g)); err != nil && !errors.Is(err, os.ErrNotExist) {
				st.log.Error("rotate", "err", err)
			}
		}
		open(i)
	}
	line := func(i int) {
		seq[i]++
		fmt.Fprintf(files[i], "%s %s seq=%08d GET /api/v1/items/%d HTTP/1.1 200 %d \"logferry-demo\"\n",
			time.Now().Format(time.RFC3339Nano), name(i), seq[i], seq[i]%977, 200+seq[i]%5000)
		counter(i).Add(1)
	}
	var owed float64
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.storms:
			// Two rotations of every local file at once, each new file
			// getting a burst of lines first.
			for range 2 {
				for i := st.o.files; i < len(files); i++ {
					if files[i] != nil {
						rotate(i)
						for range 20 {
							line(i)
						}
					}
				}
			}
			continue
		case <-tick.C:
		}
		owed += perTick
		for ; owed >= 1; owed-- {
			i := next % len(files)
			next++
			if files[i] == nil {
				continue
			}
			if st.o.rotateEvery > 0 && time.Since(opened[i]) > st.o.rotateEvery {
				rotate(i)
			}
			line(i)
		}
	}
}

type agentView struct {
	files   int
	rate    float64
	behind  float64
	shipped float64
	up      bool
}

// show prints the live view (or one line of totals).
func (st *stack) show(ctx context.Context, w io.Writer, full bool) {
	ctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	leader := st.leader(ctx)
	arrived := st.arrived(ctx)
	owned := map[string]int{}
	if resp, err := st.cli.Get(ctx, st.ks.AssignPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly()); err == nil {
		for _, kv := range resp.Kvs {
			if k, err := st.ks.Parse(string(kv.Key)); err == nil {
				owned[k.Agent]++
			}
		}
	}
	elapsed := time.Since(st.lastView).Seconds()
	st.lastView = time.Now()
	views := map[string]agentView{}
	for _, p := range st.procs {
		if strings.HasPrefix(p.name, "coord-") {
			continue
		}
		v := agentView{files: owned[p.name]}
		if m, err := scrape(ctx, p.listen); err == nil {
			v.up = true
			v.shipped = m["logagent_lines_shipped_total"]
			v.behind = m["logagent_file_bytes_behind"]
			if last, ok := st.lastShipped[p.name]; ok && elapsed > 0 {
				v.rate = (v.shipped - last) / elapsed
			}
			st.lastShipped[p.name] = v.shipped
		}
		views[p.name] = v
	}
	written := st.written.Load() + st.writtenLocal.Load()*int64(st.o.agents)
	if !full {
		fmt.Fprintf(w, "%s leader=%s written=%d arrived=%d\n", time.Now().Format("15:04:05"), leader, written, arrived)
		return
	}
	fmt.Fprint(w, "\033[H\033[2J")
	fmt.Fprintf(w, "logferry demo — %s   (Ctrl-C stops everything)\n\n", time.Now().Format("15:04:05"))
	fmt.Fprintf(w, "etcd %v   kafka %v   topic %q over %s\n", st.etcdEndpoints, st.kafkaBrokers, demoTopic, st.logDir)
	fmt.Fprintf(w, "leader: %s\n\n", leader)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "AGENT\tUP\tFILES OWNED\tLINES/S\tLINES SHIPPED\tBYTES BEHIND\t")
	names := make([]string, 0, len(views))
	for n := range views {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := views[n]
		fmt.Fprintf(tw, "%s\t%t\t%d\t%.0f\t%.0f\t%.0f\t\n", n, v.up, v.files, v.rate, v.shipped, v.behind)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nlines to deliver: %d (local files count once per agent)   records in Kafka: %d   (duplicates only after a crash)\n", written, arrived)
	fmt.Fprintf(w, "\nprocess logs: %s\n", filepath.Join(st.dir, "procs"))
}

// leader is the election candidate with the lowest create revision.
func (st *stack) leader(ctx context.Context) string {
	resp, err := st.cli.Get(ctx, st.ks.ElectionPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil || len(resp.Kvs) == 0 {
		return "none"
	}
	return string(resp.Kvs[0].Value)
}

// arrived is the number of records in the demo topics.
func (st *stack) arrived(ctx context.Context, topics ...string) int64 {
	if len(topics) == 0 {
		topics = []string{demoTopic, localTopic}
	}
	if st.admin == nil {
		// One client for the life of the stack: it reconnects by itself
		// across broker restarts.
		cl, err := kgo.NewClient(kgo.SeedBrokers(st.kafkaBrokers...))
		if err != nil {
			return -1
		}
		st.adminClient, st.admin = cl, kadm.NewClient(cl)
	}
	ends, err := st.admin.ListEndOffsets(ctx, topics...)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// scrape reads an agent's /metrics and sums each metric over its labels.
func scrape(ctx context.Context, addr string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			out[name] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out, nil
}

// verify waits until every written line is in Kafka (distinct by file and
// offset; a local file once per agent), checks that no file of the shared
// topic was shipped by two agents at once, and reports totals.
func (st *stack) verify(w io.Writer) error {
	want := st.written.Load()
	wantLocal := st.writtenLocal.Load() * int64(st.o.agents)
	deadline := time.Now().Add(st.o.checkTimeout)
	poll := time.NewTicker(500 * time.Millisecond)
	defer poll.Stop()
	for ; ; <-poll.C {
		shared, errS := st.readTopic(demoTopic)
		local, errL := st.readTopic(localTopic)
		err := errors.Join(errS, errL)
		totals := fmt.Sprintf("lines to deliver %d, delivered %d, lost %d, duplicated %d; kills %d, broker restarts %d, failovers %d, "+
			"max failover %v; files shipped by two agents at once %d; duplicates that differ from their original %d; rotation storms %d",
			want+wantLocal, shared.distinct+local.distinct, max(0, want+wantLocal-shared.distinct-local.distinct),
			shared.total+local.total-shared.distinct-local.distinct, st.chaos.kills, st.chaos.brokerRestarts,
			st.chaos.failovers, st.chaos.maxFailover.Round(time.Millisecond), shared.concurrent,
			shared.mismatched+local.mismatched, st.chaos.storms)
		if err == nil && shared.distinct >= want && local.distinct >= wantLocal {
			if shared.concurrent > 0 || shared.mismatched+local.mismatched > 0 {
				return fmt.Errorf("check FAILED: %s", totals)
			}
			fmt.Fprintf(w, "check OK: %s\n", totals)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("check FAILED after %v: %s (err %v); missing in %s: %s", st.o.checkTimeout, totals, err, demoTopic, st.missing())
		}
	}
}

type topicCount struct {
	distinct, total int64
	// concurrent counts files whose records show two agents shipping them
	// at the same time: in time order, a host's records resume within
	// 100 ms of another host's, which no handover or crash recovery can do.
	concurrent int
	// mismatched counts records whose (file, offset) repeats an earlier
	// record's with another value: a duplicate that is not a copy.
	mismatched int
}

// readTopic reads a whole topic and counts its records by (file, offset).
func (st *stack) readTopic(topic string) (topicCount, error) {
	var c topicCount
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	end := st.arrived(ctx, topic)
	if end <= 0 {
		return c, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(st.kafkaBrokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return c, err
	}
	defer cl.Close()
	seen := map[string]string{} // (file, offset) -> value
	byFile := map[string][]shipped{}
	for c.total < end {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		fs.EachRecord(func(r *kgo.Record) {
			c.total++
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			k := h["file"] + "@" + h["offset"]
			if v, dup := seen[k]; dup && v != string(r.Value) {
				c.mismatched++ // a duplicate must be a copy of its original
			}
			seen[k] = string(r.Value)
			byFile[h["file"]] = append(byFile[h["file"]], shipped{host: h["host"], at: r.Timestamp})
		})
	}
	c.distinct = int64(len(seen))
	for _, rs := range byFile {
		if concurrentShipping(rs) {
			c.concurrent++
		}
	}
	return c, nil
}

// shipped is one record of a file: who produced it, when.
type shipped struct {
	host string
	at   time.Time
}

// concurrentShipping reports whether a file's records show two agents
// shipping it at the same time: in time order, a host's records resume
// within 100 ms of its previous record after another host's record came in
// between. A handover or a crash recovery takes far longer than that (a
// reconcile pass alone is 200 ms), so only concurrent owners do it.
func concurrentShipping(rs []shipped) bool {
	rs = slices.Clone(rs)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].at.Before(rs[j].at) })
	lastAt := map[string]time.Time{}
	for i, r := range rs {
		if i > 0 && rs[i-1].host != r.host {
			if prev, ok := lastAt[r.host]; ok && r.at.Sub(prev) < 100*time.Millisecond {
				return true
			}
		}
		lastAt[r.host] = r.at
	}
	return false
}

// missing lists, per generated file, the sequence numbers not in Kafka.
func (st *stack) missing() string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(st.kafkaBrokers...), kgo.ConsumeTopics(demoTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	end := st.arrived(ctx)
	got := map[int]map[int]bool{}
	var total int64
	for total < end && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			total++
			var file, seq int
			if _, err := fmt.Sscanf(string(r.Value[strings.Index(string(r.Value), " app-")+1:]), "app-%d seq=%d", &file, &seq); err == nil {
				if got[file] == nil {
					got[file] = map[int]bool{}
				}
				got[file][seq] = true
			}
		})
	}
	var b strings.Builder
	for f := 0; f < st.o.files; f++ {
		var runs []string
		maxSeq := 0
		for s := range got[f] {
			maxSeq = max(maxSeq, s)
		}
		for s := 1; s <= maxSeq; s++ {
			if !got[f][s] {
				start := s
				for s <= maxSeq && !got[f][s] {
					s++
				}
				runs = append(runs, fmt.Sprintf("%d-%d", start, s-1))
			}
		}
		if len(runs) > 0 {
			fmt.Fprintf(&b, "app-%d: %v; ", f, runs)
		}
	}
	return b.String()
}

// close stops the processes (SIGTERM, then SIGKILL after 10 s), then the
// broker and etcd, then removes a temporary work dir.
func (st *stack) close() {
	for i := len(st.procs) - 1; i >= 0; i-- {
		_ = st.procs[i].cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range st.procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			st.log.Warn("process did not stop within 10s; killing it", "name", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if st.adminClient != nil {
		st.adminClient.Close()
	}
	if st.cli != nil {
		st.cli.Close()
	}
	if st.kafka != nil {
		st.kafka.Close()
	}
	if st.etcd != nil {
		st.etcd.Close()
	}
	if st.tempDir && !st.o.keep {
		if err := os.RemoveAll(st.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			st.log.Warn("remove work dir", "dir", st.dir, "err", err)
		}
	}
}
