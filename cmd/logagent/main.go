// Command logagent is logferry's per-host agent: it heartbeats in etcd under
// every topic directory whose globs match files on this host, tails the
// files the coordinator assigned to it into Kafka, and checkpoints their
// offsets in etcd after Kafka acknowledged them.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/logferry/logferry/internal/cliflags"
	"github.com/logferry/logferry/internal/etcdflags"
	"github.com/logferry/logferry/internal/logging"
	"github.com/logferry/logferry/internal/memtarget"
	"github.com/logferry/logferry/internal/opsserver"
	"github.com/logferry/logferry/internal/version"
	"github.com/logferry/logferry/pkg/agent"
	"github.com/logferry/logferry/pkg/fileid"
	"github.com/logferry/logferry/pkg/ship"
	"github.com/logferry/logferry/pkg/tailer"
)

const envPrefix = "LOGAGENT"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "logagent:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type options struct {
	etcd               etcdflags.Flags
	kafka              ship.Flags
	id                 string
	listen             string
	leaseTTL           time.Duration
	checkpointInterval time.Duration
	stateDir           string
	etcdCheckpoint     time.Duration
	etcdBudget         float64
	scanInterval       time.Duration
	allowPaths         []string
	fingerprintBytes   int
	rotatedIdle        time.Duration
	closeInactive      time.Duration
	maxStarting        int
	memoryTarget       string
	stopTimeout        time.Duration
	tailMode           string
	tailPoll           time.Duration
	watchDirs          bool
	partialTimeout     time.Duration
	pprof              bool
	logLevel           string
	logFormat          string
	showVersion        bool
	checkConfig        bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := pflag.NewFlagSet("logagent", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o.etcd.Register(fs)
	o.kafka.Register(fs)
	fs.StringVar(&o.id, "id", "", "agent id in etcd keys (default: this host's first non-loopback IP address)")
	fs.StringVar(&o.listen, "listen", ":9101", "address of /metrics, /healthz and /readyz")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 10*time.Second, "TTL of the agent's etcd lease: how soon the coordinator notices a dead agent")
	fs.DurationVar(&o.checkpointInterval, "checkpoint-interval", time.Second, "how often acknowledged offsets are saved in the local state file "+
		"(fsynced; etcd if --state-dir is empty); bounds the lines repeated after a crash and restart on this host")
	fs.StringVar(&o.stateDir, "state-dir", defaultStateDir(), "directory of the local checkpoint file (systemd's StateDirectory, "+
		"$STATE_DIRECTORY, when set); empty: etcd is the only tier, written every --checkpoint-interval")
	fs.DurationVar(&o.etcdCheckpoint, "etcd-checkpoint-interval", 0, "how often moved offsets go to etcd, where another host resumes "+
		"after a failover (releases, clean stops and finished files go at once); 0: sized to the fleet, its files divided by "+
		"--etcd-checkpoint-budget, between 5s and 10m")
	fs.Float64Var(&o.etcdBudget, "etcd-checkpoint-budget", agent.DefaultEtcdCheckpointBudget, "the fleet's etcd checkpoint writes "+
		"per second that the sized --etcd-checkpoint-interval aims at (use the same value on every agent)")
	fs.DurationVar(&o.scanInterval, "scan-interval", 10*time.Second, "how often topic globs are evaluated again (also on every topic change)")
	fs.StringSliceVar(&o.allowPaths, "allow-path", []string{"/var/log"}, "root under which files may be read (repeatable); topics whose globs reach outside are refused")
	fs.IntVar(&o.fingerprintBytes, "fingerprint-bytes", fileid.DefaultFingerprintBytes, "leading bytes that identify a file (with its inode); a shorter file is identified by all its bytes and keeps that identity as it grows")
	fs.DurationVar(&o.rotatedIdle, "rotated-idle", 5*time.Second, "a rotated or renamed file that stopped growing this long is finished")
	fs.DurationVar(&o.closeInactive, "close-inactive", agent.DefaultCloseInactive, "park a file that has not grown for this long: "+
		"no goroutine, no buffer, no watch of its own, only its descriptor, until a write, rename or delete in its directory wakes it "+
		"(within milliseconds through the directory watch; at the next scan without it); 0: never park")
	fs.IntVar(&o.maxStarting, "max-starting-files", agent.DefaultMaxStarting, "how many files are read from their checkpoint to their "+
		"end at once (at a start, or as parked files wake); the others wait their turn (logagent_files_queued), and while any waits, "+
		"a file read to its end is parked at once instead of after --close-inactive, so that ten thousand files never hold ten "+
		"thousand tailers")
	fs.StringVar(&o.memoryTarget, "memory-target", "48MiB", "memory the agent's Go runtime aims at (its soft limit, GOMEMLIMIT; the RSS also holds the binary's pages, about 16MiB): "+
		"the collector runs and returns memory to the kernel when the agent reaches it, and the limit rises with the live heap "+
		"when a load needs more (never under 1.25 times it), so it bounds an idle agent, never a busy one; 0: off (GOGC alone, "+
		"more memory, less collecting); GOMEMLIMIT in the environment wins")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 5*time.Second, "on SIGTERM or handover, how long to wait for Kafka to acknowledge what was sent")
	fs.StringVar(&o.tailMode, "tail-mode", "inotify", "how followed files are watched for appends: inotify (one inotify watch per followed "+
		"file: wakes within milliseconds, costs nothing while idle; the default) or poll (a stat every --tail-poll-interval). Files of "+
		"shared topics (network volumes, where inotify misses other hosts' writes) are always polled; either way a file that sent no "+
		"notification is read again after 1s, backing off to 8s while it stays quiet")
	fs.DurationVar(&o.tailPoll, "tail-poll-interval", 250*time.Millisecond, "how often a polled file (--tail-mode poll, shared topics) is checked for appends")
	fs.BoolVar(&o.watchDirs, "watch-dirs", true, "watch the topics' directories (inotify) and open new files the moment they appear, so a file "+
		"renamed away or deleted milliseconds later is still read; false: new files are found by the scans only")
	fs.DurationVar(&o.partialTimeout, "partial-line-timeout", 0, "ship a last line that has no newline once its file has not grown for this long "+
		"(0: wait for the newline, or for the file's rotation, however long)")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve the Go runtime profiles (/debug/pprof/) on --listen, for a diagnosis; "+
		"without it the heap is not sampled for profiles (the samples' stacks cost over a MiB that an agent on every host need not keep)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&o.checkConfig, "check-config", false, "check flags and environment, print the effective settings and exit (systemd ExecStartPre)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: logagent [flags]\n\nEvery flag can also be set by the environment variable shown.\n\n%s", fs.FlagUsages())
	}
	cliflags.DocumentEnv(fs, envPrefix)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if err := cliflags.ApplyEnv(fs, envPrefix); err != nil {
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	return &o, nil
}

// run is main without the process: tests call it in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if o.showVersion {
		fmt.Fprintln(stdout, version.String("logagent"))
		return nil
	}
	log, err := logging.New(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if o.tailMode != "poll" && o.tailMode != "inotify" {
		return fmt.Errorf("%w: --tail-mode %q: want poll or inotify", errUsage, o.tailMode)
	}
	if o.closeInactive < 0 {
		return fmt.Errorf("%w: --close-inactive %v: want a duration of 0 (never park) or more", errUsage, o.closeInactive)
	}
	if o.maxStarting < 1 {
		return fmt.Errorf("%w: --max-starting-files %d: want 1 or more", errUsage, o.maxStarting)
	}
	memTarget, err := memtarget.ParseSize(o.memoryTarget)
	if err != nil {
		return fmt.Errorf("%w: --memory-target %q: %w", errUsage, o.memoryTarget, err)
	}
	if o.tailPoll <= 0 {
		return fmt.Errorf("%w: --tail-poll-interval %v: want a positive duration", errUsage, o.tailPoll)
	}
	tailer.SetPollInterval(o.tailPoll)
	if o.tailMode == "inotify" {
		// nxadm/tail's shared inotify watcher ends the process if it
		// cannot get an instance: check first, and poll instead.
		if err := tailer.InotifyAvailable(); err != nil {
			log.Warn("--tail-mode inotify unavailable; polling followed files instead", "err", err)
			o.tailMode = "poll"
		}
	}
	if o.id == "" {
		if o.id, err = hostIP(); err != nil {
			return fmt.Errorf("%w: --id not given and %w", errUsage, err)
		}
	}
	ks, err := o.etcd.Space()
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	kcfg, err := o.kafka.Config()
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	shipper, err := ship.New(kcfg, reg, log)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if _, err := o.etcd.ClientConfig(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if o.checkConfig {
		fmt.Fprintf(stdout, "config ok: id=%s etcd=%v prefix=%q kafka=%v acks=%s allow_paths=%v listen=%s state_dir=%q\n",
			o.id, o.etcd.Endpoints, ks.Root(), kcfg.Brokers, kcfg.Acks, o.allowPaths, o.listen, o.stateDir)
		return nil
	}
	// Bind --listen before dialling etcd: an outgoing connection could
	// otherwise take the port (it may be in the ephemeral range) first.
	var a *agent.Agent
	ops := opsserver.New(o.listen, reg, func() error {
		if a == nil {
			return errors.New("starting")
		}
		return a.Ready()
	}, log)
	if o.pprof {
		ops.EnablePprof()
	} else {
		runtime.MemProfileRate = 0 // nothing could read the samples
	}
	if err := ops.Listen(); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	cli, err := o.etcd.Connect()
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	defer cli.Close()
	a, err = agent.New(agent.Config{
		Client: cli, Space: ks, ID: o.id, Version: version.Version,
		AllowPaths: o.allowPaths, FingerprintBytes: o.fingerprintBytes,
		ScanInterval: o.scanInterval, CheckpointInterval: o.checkpointInterval, LeaseTTL: o.leaseTTL,
		StateDir: o.stateDir, EtcdCheckpointInterval: o.etcdCheckpoint, EtcdCheckpointBudget: o.etcdBudget,
		RotatedIdle: o.rotatedIdle, StopTimeout: o.stopTimeout, TailInotify: o.tailMode == "inotify", NoDirWatch: !o.watchDirs,
		PartialLineTimeout: o.partialTimeout, CloseInactive: cmp.Or(o.closeInactive, -1), // the flag's 0: never park
		MaxStarting: o.maxStarting,
		Shipper:     shipper, Registerer: reg, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	log.Info("logagent starting", "version", version.Version, "id", o.id, "etcd", o.etcd.Endpoints,
		"kafka", kcfg.Brokers, "allow_paths", o.allowPaths, "listen", ops.Addr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	g.Go(func() error {
		return memtarget.Run(gctx, memtarget.Config{Target: memTarget, Logger: log})
	})
	return g.Wait()
}

// defaultStateDir is systemd's StateDirectory for the unit, or the
// conventional place.
func defaultStateDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return strings.Split(d, ":")[0]
	}
	return "/var/lib/logagent"
}

// hostIP is the first non-loopback IP address of the host, the default
// agent id: it names the host the way operators already do.
func hostIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("list interface addresses: %w", err)
	}
	var v6 string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if ip4 := ipn.IP.To4(); ip4 != nil {
			return ip4.String(), nil
		}
		if v6 == "" {
			v6 = strings.ReplaceAll(ipn.IP.String(), "%", "-")
		}
	}
	if v6 != "" {
		return v6, nil
	}
	return "", errors.New("this host has no non-loopback IP address")
}
