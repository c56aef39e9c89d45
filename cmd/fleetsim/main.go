package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/logferry/logferry/internal/cliflags"
	"github.com/logferry/logferry/internal/logging"
	"github.com/logferry/logferry/pkg/agent"
)

const envPrefix = "FLEETSIM"

// allScenarios in the order they run: each starts from the state the one
// before left (cold-local always runs: it starts the coordinators).
var allScenarios = []string{"cold-local", "cold-shared", "failover", "join", "revoke", "checkpoint", "idle"}

type options struct {
	agents         int
	files          int
	sharedFiles    int // shared files each agent sees; 0: files/10, at least 1
	sharedReplicas int
	scenarios      []string
	endpoints      []string
	prefix         string
	bin            string
	dir            string
	keep           bool
	duration       time.Duration
	leaseTTL       time.Duration
	coordTTL       time.Duration
	coordArgs      []string
	cp             checkpointModel
	cpBudget       float64
	joinShare      float64
	revokeShare    float64
	timeout        time.Duration
	clients        int
	sampleEvery    time.Duration
	logLevel       string
}

// sharedPerAgent is how many shared files each agent reports.
func (o *options) sharedPerAgent() int {
	if o.sharedFiles > 0 {
		return o.sharedFiles
	}
	return max(1, o.files/10)
}

func (o *options) wants(scenario string) bool { return slices.Contains(o.scenarios, scenario) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}

func parse(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := pflag.NewFlagSet("fleetsim", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.agents, "agents", 1000, "simulated agents at the start (each its own lease, heartbeats and checkpoints)")
	fs.IntVar(&o.files, "files", 100, "files per agent in the local topic")
	fs.IntVar(&o.sharedFiles, "shared-files", 0, "shared-topic files each agent sees (0: --files/10, at least 1)")
	fs.IntVar(&o.sharedReplicas, "shared-replicas", 3, "how many agents see each shared file (the hosts mounting its volume)")
	fs.StringSliceVar(&o.scenarios, "scenarios", allScenarios, "scenarios to run and report, comma-separated: "+strings.Join(allScenarios, ", "))
	fs.StringSliceVar(&o.endpoints, "etcd-endpoints", nil, "use this external etcd (host:port, comma-separated) instead of the embedded one; its key space under --etcd-prefix must be empty")
	fs.StringVar(&o.prefix, "etcd-prefix", "", "root prefix of every key, passed to the coordinators too (with an external etcd, pick one nobody uses)")
	fs.StringVar(&o.bin, "bin", "bin", "directory holding the coordinator binary (make build)")
	fs.StringVar(&o.dir, "dir", "", "working directory for the embedded etcd and the coordinators' logs (default: a new temporary directory, removed unless --keep or a failure)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory")
	fs.DurationVar(&o.duration, "duration", time.Minute, "length of the checkpoint and idle scenarios")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 10*time.Second, "agents' lease TTL (the agent's --lease-ttl)")
	fs.DurationVar(&o.coordTTL, "coordinator-lease-ttl", 5*time.Second, "coordinators' --lease-ttl (whole seconds): how long a killed leader blocks the standby")
	fs.StringSliceVar(&o.coordArgs, "coordinator-flag", nil, "extra flag for both coordinators, repeatable (for example --coordinator-flag=--resync-interval=5m)")
	fs.DurationVar(&o.cp.interval, "checkpoint-interval", 0, "checkpoint model: how often each agent writes its moved offsets to etcd; "+
		"0: as the agent sizes its etcd tier, the fleet's files over --checkpoint-budget, between 5s and 10m (1s models the agent before its two-tier checkpoints)")
	fs.Float64Var(&o.cpBudget, "checkpoint-budget", agent.DefaultEtcdCheckpointBudget, "checkpoint model: the agents' --etcd-checkpoint-budget (keys/s)")
	fs.IntVar(&o.cp.batch, "checkpoint-batch", 128, "checkpoint model: files per Txn, each Put guarded by its assignment (at most etcd's --max-txn-ops, 128)")
	fs.Float64Var(&o.cp.busy, "checkpoint-busy", 1, "checkpoint model: share of assigned files whose offset moves every interval (1: every file is busy)")
	fs.Float64Var(&o.joinShare, "join-share", 0.10, "join scenario: agents added within one second, as a share of --agents")
	fs.Float64Var(&o.revokeShare, "revoke-share", 0.10, "revoke scenario: share of the agents whose leases are revoked at once")
	fs.DurationVar(&o.timeout, "converge-timeout", 5*time.Minute, "a scenario that has not converged after this long fails, and the scenarios after it are skipped")
	fs.IntVar(&o.clients, "clients", 16, "etcd connections the simulated agents share")
	fs.DurationVar(&o.sampleEvery, "sample-interval", time.Second, "how often etcd and the leader process are sampled")
	fs.StringVar(&o.logLevel, "log-level", "warn", "simulator log level (stderr): debug, info, warn or error")
	cliflags.DocumentEnv(fs, envPrefix)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: fleetsim [flags]

Simulates a fleet of logferry agents against a real etcd and the real
coordinator pair (two processes of --bin/coordinator) and prints, per
scenario, how long the coordinators take and what etcd and the leader cost.
Every flag can also be set through the environment variable shown.

Flags:
%s`, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := cliflags.ApplyEnv(fs, envPrefix); err != nil {
		return nil, err
	}
	return &o, o.validate()
}

func (o *options) validate() error {
	for _, s := range o.scenarios {
		if !slices.Contains(allScenarios, s) {
			return fmt.Errorf("--scenarios: unknown scenario %q; want some of %s", s, strings.Join(allScenarios, ","))
		}
	}
	switch {
	case o.agents < 1 || o.agents > 100_000:
		return fmt.Errorf("--agents %d: want 1..100000", o.agents)
	case o.files < 1 || o.files > 4000:
		return fmt.Errorf("--files %d: want 1..4000 (a heartbeat holds about 4,000 files)", o.files)
	case o.sharedFiles < 0 || o.sharedFiles > 4000:
		return fmt.Errorf("--shared-files %d: want 0..4000", o.sharedFiles)
	case o.sharedReplicas < 1 || o.sharedReplicas > o.agents:
		return fmt.Errorf("--shared-replicas %d: want 1..--agents (%d)", o.sharedReplicas, o.agents)
	case o.cp.interval != 0 && o.cp.interval < 10*time.Millisecond:
		return fmt.Errorf("--checkpoint-interval %v: at least 10ms (or 0)", o.cp.interval)
	case o.cpBudget <= 0:
		return fmt.Errorf("--checkpoint-budget %v: want more than 0", o.cpBudget)
	case o.cp.batch < 1 || o.cp.batch > 128:
		return fmt.Errorf("--checkpoint-batch %d: want 1..128", o.cp.batch)
	case o.cp.busy < 0 || o.cp.busy > 1:
		return fmt.Errorf("--checkpoint-busy %v: want 0..1", o.cp.busy)
	case o.joinShare <= 0 || o.joinShare > 1:
		return fmt.Errorf("--join-share %v: want more than 0, at most 1", o.joinShare)
	case o.revokeShare <= 0 || o.revokeShare > 1:
		return fmt.Errorf("--revoke-share %v: want more than 0, at most 1", o.revokeShare)
	case o.leaseTTL < time.Second:
		return fmt.Errorf("--lease-ttl %v: at least 1s", o.leaseTTL)
	case o.coordTTL < time.Second || o.coordTTL%time.Second != 0:
		return fmt.Errorf("--coordinator-lease-ttl %v: whole seconds, at least 1s", o.coordTTL)
	case o.duration <= 0:
		return fmt.Errorf("--duration %v: want more than 0", o.duration)
	case o.timeout <= 0:
		return fmt.Errorf("--converge-timeout %v: want more than 0", o.timeout)
	case o.clients < 1 || o.clients > 1024:
		return fmt.Errorf("--clients %d: want 1..1024", o.clients)
	case o.sampleEvery < 10*time.Millisecond:
		return fmt.Errorf("--sample-interval %v: at least 10ms", o.sampleEvery)
	}
	if _, err := os.Stat(filepath.Join(o.bin, "coordinator")); err != nil {
		return fmt.Errorf("--bin %q: coordinator not found (run make build): %w", o.bin, err)
	}
	if o.cp.interval == 0 {
		// As each agent sizes its etcd tier (pkg/agent checkpoint.go).
		files := float64(o.agents*o.files + o.sharedFiles)
		o.cp.interval = min(max(time.Duration(files/o.cpBudget*float64(time.Second)), 5*time.Second), 10*time.Minute)
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log, err := logging.New(stderr, o.logLevel, "text")
	if err != nil {
		return err
	}
	env, err := setUp(ctx, o, log)
	if err != nil {
		return err
	}
	failed := true
	defer func() { env.close(failed) }()
	s := newSim(o, env, log, stdout)
	if err := s.runAll(ctx); err != nil {
		return err
	}
	s.summary()
	if bad := s.failures(); len(bad) > 0 {
		return fmt.Errorf("%d scenario(s) failed: %s (coordinator logs in %s)", len(bad), strings.Join(bad, "; "), env.dir)
	}
	failed = false
	return nil
}
