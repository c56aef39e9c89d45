// Command devstack runs the whole logferry system on one machine: an
// embedded etcd, an in-memory Kafka-protocol broker on 127.0.0.1:9092, two
// coordinators and three agents (the real binaries, as processes), a demo
// topic over a generated log directory, a writer, and a live view of it all.
// Ctrl-C stops everything cleanly. It is what `make demo` runs; it lives
// apart from the production binaries so they carry none of it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/logferry/logferry/internal/cliflags"
)

const envPrefix = "DEVSTACK"

type options struct {
	bin          string
	dir          string
	keep         bool
	etcd         []string
	kafka        []string
	kafkaPort    int
	agents       int
	coordinators int
	files        int
	localFiles   int
	rate         int
	duration     time.Duration
	check        bool
	checkTimeout time.Duration
	view         bool
	rotateEvery  time.Duration
	writeFor     time.Duration
	chaosEvery   time.Duration
	faults       []string
	seed         int64
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

func parse(args []string, stderr io.Writer) (*options, error) {
	var o options
	fs := pflag.NewFlagSet("devstack", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bin, "bin", "bin", "directory holding the logagent, coordinator and logctl binaries (make build)")
	fs.StringVar(&o.dir, "dir", "", "working directory for data, logs and the generated log files (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep the working directory on exit")
	fs.StringSliceVar(&o.etcd, "etcd-endpoints", nil, "use this external etcd instead of starting an embedded one")
	fs.StringSliceVar(&o.kafka, "kafka-brokers", nil, "use these external Kafka brokers instead of starting the in-memory one")
	fs.IntVar(&o.kafkaPort, "kafka-port", 9092, "port of the in-memory broker on 127.0.0.1 (0: any free port)")
	fs.IntVar(&o.agents, "agents", 3, "number of agents (ids 127.0.0.2, 127.0.0.3, ...)")
	fs.IntVar(&o.coordinators, "coordinators", 2, "number of coordinators")
	fs.IntVar(&o.files, "files", 6, "number of generated log files of the shared topic \"demo\"")
	fs.IntVar(&o.localFiles, "local-files", 2, "number of generated log files of the local topic \"local\" (every agent ships each: they share this machine)")
	fs.IntVar(&o.rate, "rate", 500, "lines written per second, over all files")
	fs.DurationVar(&o.duration, "duration", 0, "stop by itself after this long (0: run until Ctrl-C)")
	fs.BoolVar(&o.check, "check", false, "on exit, stop writing, wait until every line is in Kafka, and fail if any is missing")
	fs.DurationVar(&o.checkTimeout, "check-timeout", time.Minute, "with --check: how long to wait for every line to arrive before failing")
	fs.BoolVar(&o.view, "view", true, "show the live view (otherwise print a line of totals every few seconds)")
	fs.DurationVar(&o.rotateEvery, "rotate-every", 20*time.Second, "rename-rotate each log file this often (0: never)")
	fs.DurationVar(&o.writeFor, "write-for", 0, "stop writing after this long, keep the stack running (0: write until the end)")
	fs.DurationVar(&o.chaosEvery, "chaos-every", 0, "inject a fault this often: kill -9 an agent or a coordinator (the leader half the time) and restart it, "+
		"or stop and restart the broker (0: no faults)")
	fs.StringSliceVar(&o.faults, "faults", []string{"kill", "broker", "storm"}, "kinds of fault --chaos-every may inject: kill (kill -9 and restart a process), broker (stop and restart the broker), storm (rotation storm)")
	fs.Int64Var(&o.seed, "seed", 0, "random seed of the faults (0: from the clock); printed so a run can be repeated")
	cliflags.DocumentEnv(fs, envPrefix)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := cliflags.ApplyEnv(fs, envPrefix); err != nil {
		return nil, err
	}
	switch {
	case o.agents < 1 || o.agents > 200:
		return nil, fmt.Errorf("--agents %d: want 1..200", o.agents)
	case o.coordinators < 1 || o.coordinators > 9:
		return nil, fmt.Errorf("--coordinators %d: want 1..9", o.coordinators)
	case o.files < 1 || o.files > 1000:
		return nil, fmt.Errorf("--files %d: want 1..1000", o.files)
	case !validFaults(o.faults):
		return nil, fmt.Errorf("--faults %q: want kill, broker and/or storm", o.faults)
	case o.localFiles < 0 || o.localFiles > 1000:
		return nil, fmt.Errorf("--local-files %d: want 0..1000", o.localFiles)
	case o.rate < 0 || o.rate > 1_000_000:
		return nil, fmt.Errorf("--rate %d: want 0..1000000", o.rate)
	}
	for _, b := range []string{"logagent", "coordinator"} {
		if _, err := os.Stat(filepath.Join(o.bin, b)); err != nil {
			return nil, fmt.Errorf("--bin %q: %s not found (run make build): %w", o.bin, b, err)
		}
	}
	return &o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	st, err := startStack(ctx, o, log)
	if err != nil {
		return err
	}
	defer st.close()
	fmt.Fprintf(stdout, "logferry dev stack: etcd %v, kafka %v, work dir %s\n", st.etcdEndpoints, st.kafkaBrokers, st.dir)
	fmt.Fprintf(stdout, "try: %s/logctl --etcd-endpoints %s status\n", o.bin, st.etcdEndpoints[0])
	runErr := st.run(ctx, stdout)
	if errors.Is(runErr, context.Canceled) || errors.Is(runErr, context.DeadlineExceeded) {
		runErr = nil
	}
	if runErr == nil && o.check {
		runErr = st.verify(stdout)
	}
	return runErr
}

func validFaults(fs []string) bool {
	for _, f := range fs {
		if f != "kill" && f != "broker" && f != "storm" {
			return false
		}
	}
	return len(fs) > 0
}
