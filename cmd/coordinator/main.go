// Command coordinator is one member of logferry's coordinator HA pair. The
// members elect a leader in etcd; the leader watches /topics/ and writes
// the assignment of every file to exactly one agent under /assign/,
// handing files over between agents without two ever shipping one file at
// once. See pkg/coordinator.
//
// Every flag can also be set through the environment variable named in its
// help (COORDINATOR_ETCD_ENDPOINTS for --etcd-endpoints, and so on); the
// command line wins. SIGTERM or SIGINT stops it within 10 s, resigning
// leadership so the standby takes over at once.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
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
	"github.com/logferry/logferry/internal/opsserver"
	"github.com/logferry/logferry/internal/version"
	"github.com/logferry/logferry/pkg/coordinator"
)

const envPrefix = "COORDINATOR"

// stopGrace is the contract's bound on a clean stop.
const stopGrace = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// A stop that hangs (etcd unreachable in a way no timeout caught)
		// must not outlive the contract: exit non-zero instead.
		<-ctx.Done()
		t := time.NewTimer(stopGrace)
		<-t.C
		fmt.Fprintf(os.Stderr, "coordinator: did not stop within %v; exiting\n", stopGrace)
		os.Exit(1)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line.
type options struct {
	etcd              etcdflags.Flags
	id                string
	listen            string
	leaseTTL          time.Duration
	handoverTimeout   time.Duration
	reconcileInterval time.Duration
	resyncInterval    time.Duration
	compactInterval   time.Duration
	ownerGoneRate     float64
	retention         time.Duration
	deleteRate        float64
	ownerGoneGrace    time.Duration
	statusInterval    time.Duration
	memoryLimit       string
	pprof             bool
	logLevel          string
	logFormat         string
	checkConfig       bool
	showVersion       bool
}

func newFlagSet(o *options, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("coordinator", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	o.etcd.Register(fs)
	fs.StringVar(&o.id, "id", host, "this coordinator's id: its value in the election and the leader named in assignments and status; the host name by default")
	fs.StringVar(&o.listen, "listen", ":9102", "address serving /metrics, /healthz and /readyz")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", coordinator.DefaultLeaseTTL, "TTL of the election lease (whole seconds, at least 1s): how long a crashed leader blocks the standby")
	fs.DurationVar(&o.handoverTimeout, "handover-timeout", coordinator.DefaultHandoverTimeout, "how long a revoked assignment may wait for the agent's release before the leader deletes it itself")
	fs.DurationVar(&o.reconcileInterval, "reconcile-interval", coordinator.DefaultReconcileInterval, "least time between two reconcile passes; changes arriving meanwhile are handled together")
	fs.DurationVar(&o.resyncInterval, "resync-interval", 0, "how often each coordinator (leader and standby) re-reads all of /topics/, /assign/ and /offsets/ from scratch (in pages), the leader then reconciling; 0, the default, never: the watches re-list by themselves whenever they break")
	fs.DurationVar(&o.compactInterval, "compact-interval", coordinator.DefaultCompactInterval, "how often the leader compacts etcd's history, to the revision it saw one interval earlier; 0 never (then compact etcd by other means)")
	fs.Float64Var(&o.ownerGoneRate, "owner-gone-rate", coordinator.DefaultOwnerGoneRate, "most files per second whose assignment the leader deletes and hands on because their agent's heartbeat is gone (one agent's files always go at once; a mass lease loss is spread out); 0 for no bound")
	fs.DurationVar(&o.retention, "checkpoint-retention", coordinator.DefaultCheckpointRetention, "how long a file must have been gone (no live agent lists it, no assignment) before the leader deletes its checkpoint; a down host's local checkpoints are never deleted; 0 never deletes any")
	fs.Float64Var(&o.deleteRate, "checkpoint-delete-rate", coordinator.DefaultCheckpointDeleteRate, "most checkpoints of gone files the leader deletes per second")
	fs.DurationVar(&o.ownerGoneGrace, "owner-gone-grace", 0, "how long an agent's heartbeat may be gone before the leader touches its assignments at all: "+
		"an agent whose lease comes back within it keeps its files untouched, one that died keeps them from everyone that much longer; 0, the default, none (the agents' --lease-ttl is a sensible value)")
	fs.DurationVar(&o.statusInterval, "status-interval", coordinator.DefaultStatusInterval, "how often /status/coordinator is refreshed when nothing else changed")
	fs.StringVar(&o.memoryLimit, "memory-limit", memoryLimitAuto, "soft limit of the Go heap (runtime/debug.SetMemoryLimit), a backstop near which the collector works harder: "+
		"a size (900MiB, 2GiB), 0 for none, or auto: GOMEMLIMIT if set, else 90% of the cgroup's memory limit (systemd MemoryMax=), else none")
	fs.BoolVar(&o.pprof, "pprof", false, "also serve the Go runtime profiles (/debug/pprof/) on --listen, for a diagnosis of the leader")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	cliflags.DocumentEnv(fs, envPrefix)
	// The two command flags are defined after DocumentEnv and ignored by
	// ApplyEnv (see run): a COORDINATOR_CHECK_CONFIG left in
	// /etc/default/coordinator would make the service exit at once.
	fs.BoolVar(&o.checkConfig, "check-config", false, "check the flags and environment, then exit: 0 if valid (for ExecStartPre); command line only")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit; command line only")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: coordinator [flags]

One member of logferry's coordinator HA pair: elects a leader in etcd; the
leader assigns every file of every topic directory to exactly one agent.
Every flag can also be set through the environment variable shown.

Flags:
%s`, fs.FlagUsages())
	}
	return fs
}

// run is the whole program; it returns the exit status: 0 after a clean
// stop, 1 on failure, 2 on bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	fs := newFlagSet(&o, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "coordinator:", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "coordinator: unexpected arguments %q\n", fs.Args())
		return 2
	}
	checkConfig, showVersion := o.checkConfig, o.showVersion
	if err := cliflags.ApplyEnv(fs, envPrefix); err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 2
	}
	o.checkConfig, o.showVersion = checkConfig, showVersion
	if o.showVersion {
		fmt.Fprintln(stdout, version.String("coordinator"))
		return 0
	}
	log, cfg, err := o.validate(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "coordinator:", err)
		return 2
	}
	if o.checkConfig {
		fmt.Fprintf(stdout, "coordinator: configuration ok (id %q, etcd %s, listen %s)\n",
			o.id, strings.Join(o.etcd.Endpoints, ","), o.listen)
		return 0
	}
	if err := serve(ctx, &o, log, cfg); err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// validate checks everything that can be checked without etcd.
func (o *options) validate(stderr io.Writer) (*slog.Logger, coordinator.Config, error) {
	log, err := logging.New(stderr, o.logLevel, o.logFormat)
	if err != nil {
		return nil, coordinator.Config{}, err
	}
	if _, err := o.memLimit(); err != nil {
		return nil, coordinator.Config{}, err
	}
	if strings.TrimSpace(o.id) == "" || strings.ContainsAny(o.id, " \t\n/") {
		return nil, coordinator.Config{}, fmt.Errorf("--id %q: want a non-empty name without spaces or slashes", o.id)
	}
	if _, _, err := net.SplitHostPort(o.listen); err != nil {
		return nil, coordinator.Config{}, fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	ks, err := o.etcd.Space()
	if err != nil {
		return nil, coordinator.Config{}, err
	}
	if _, err := o.etcd.ClientConfig(); err != nil {
		return nil, coordinator.Config{}, err
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
		min  time.Duration
	}{
		{"--lease-ttl", o.leaseTTL, time.Second},
		{"--handover-timeout", o.handoverTimeout, time.Second},
		{"--reconcile-interval", o.reconcileInterval, time.Millisecond},
		{"--resync-interval", o.resyncInterval, time.Second},
		{"--compact-interval", o.compactInterval, time.Minute},
		{"--status-interval", o.statusInterval, 100 * time.Millisecond},
		{"--owner-gone-grace", o.ownerGoneGrace, 0},
	} {
		if d.v == 0 && (d.flag == "--resync-interval" || d.flag == "--compact-interval") {
			continue // off
		}
		if d.v < d.min {
			return nil, coordinator.Config{}, fmt.Errorf("%s %v: at least %v", d.flag, d.v, d.min)
		}
	}
	if o.leaseTTL%time.Second != 0 {
		log.Warn("--lease-ttl is rounded up to whole seconds", "lease_ttl", o.leaseTTL)
	}
	if math.IsNaN(o.ownerGoneRate) || o.ownerGoneRate < 0 {
		return nil, coordinator.Config{}, fmt.Errorf("--owner-gone-rate %v: want 0 (no bound) or a positive number of files per second", o.ownerGoneRate)
	}
	if o.retention < 0 {
		return nil, coordinator.Config{}, fmt.Errorf("--checkpoint-retention %v: want 0 (never delete) or a positive duration", o.retention)
	}
	if o.retention > 0 && o.retention < time.Hour {
		// An agent remembers a rotated file for minutes only: a writer
		// appending to a finished rotated file after its checkpoint was
		// deleted would have it shipped again from its start.
		log.Warn("--checkpoint-retention under an hour: a file that comes back after its checkpoint was deleted is shipped again from its start", "checkpoint_retention", o.retention)
	}
	if math.IsNaN(o.deleteRate) || o.deleteRate <= 0 {
		return nil, coordinator.Config{}, fmt.Errorf("--checkpoint-delete-rate %v: want a positive number of checkpoints per second", o.deleteRate)
	}
	if o.handoverTimeout <= o.reconcileInterval {
		return nil, coordinator.Config{}, fmt.Errorf("--handover-timeout %v must exceed --reconcile-interval %v", o.handoverTimeout, o.reconcileInterval)
	}
	return log, coordinator.Config{
		Space: ks, ID: o.id, Version: version.Version,
		LeaseTTL: o.leaseTTL, HandoverTimeout: o.handoverTimeout,
		ReconcileInterval: o.reconcileInterval, ResyncInterval: o.resyncInterval, StatusInterval: o.statusInterval,
		CompactInterval: offIfZero(o.compactInterval), OwnerGoneRate: offIfZero(o.ownerGoneRate), OwnerGoneGrace: o.ownerGoneGrace,
		CheckpointRetention: offIfZero(o.retention), CheckpointDeleteRate: o.deleteRate,
		Logger: log,
	}, nil
}

// memLimit resolves --memory-limit in this process's environment.
func (o *options) memLimit() (memoryLimit, error) {
	return resolveMemoryLimit(o.memoryLimit, os.Getenv, cgroupMemoryLimit)
}

// offIfZero maps a flag's 0 ("off") to Config's negative ("off"; its 0
// selects the default).
func offIfZero[T time.Duration | float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// serve connects to etcd and runs the coordinator and the ops server until
// ctx is done or one of them fails.
func serve(ctx context.Context, o *options, log *slog.Logger, cfg coordinator.Config) error {
	reg := prometheus.NewRegistry()
	// Bind --listen before dialling etcd: an outgoing connection could
	// otherwise take the port (it may be in the ephemeral range) first.
	var c *coordinator.Coordinator
	ops := opsserver.New(o.listen, reg, func() error {
		if c == nil {
			return errors.New("starting")
		}
		return c.Ready()
	}, log)
	if o.pprof {
		ops.EnablePprof()
	}
	if err := ops.Listen(); err != nil {
		return err
	}
	cli, err := o.etcd.Connect()
	if err != nil {
		return err
	}
	defer cli.Close()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coordinator_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "commit"})
	info.WithLabelValues(version.Version, version.Commit).Set(1)
	reg.MustRegister(info)

	lim, err := o.memLimit()
	if err != nil {
		return err
	}
	if lim.bytes > 0 {
		debug.SetMemoryLimit(lim.bytes)
	}
	log.Info("memory limit", "bytes", lim.bytes, "from", lim.why)
	cfg.Client, cfg.Registerer = cli, reg
	if c, err = coordinator.New(cfg); err != nil {
		return err
	}
	log.Info("coordinator starting", "version", version.String("coordinator"), "id", cfg.ID,
		"etcd", o.etcd.Endpoints, "prefix", cfg.Space.Root(), "listen", ops.Addr())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	log.Info("coordinator stopped")
	return err
}
