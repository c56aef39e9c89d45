package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/logferry/logferry/pkg/topics"
)

// sim runs the scenarios in order over one env and collects their results.
type sim struct {
	o       *options
	e       *env
	fl      *fleet
	log     *slog.Logger
	out     io.Writer
	results []*result
	// unsettled: a scenario left the fleet unsettled; those after it would
	// start from a broken state and wait out their deadlines for nothing.
	unsettled bool
}

// result is one scenario's figures.
type result struct {
	name     string
	rows     [][2]string // figure, value
	headline string      // one line for the summary
	failed   string      // why the scenario failed; "" if it did not
	// from and to, when set, bound the etcd and leader figures instead of
	// the scenario's start and end (a load phase without the wait after it).
	from, to   time.Time
	leasesLost float64 // agents' lease losses during the whole scenario
	w          window
}

func (r *result) add(figure, format string, args ...any) {
	r.rows = append(r.rows, [2]string{figure, fmt.Sprintf(format, args...)})
}

func (r *result) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if r.failed != "" {
		r.failed += "; "
	}
	r.failed += msg
}

type scenario struct {
	name string
	run  func(ctx context.Context, s *sim, r *result) error
}

var scenarios = []scenario{
	{"cold-local", coldLocal},
	{"cold-shared", coldShared},
	{"failover", failover},
	{"join", joinStorm},
	{"revoke", revokeLeases},
	{"checkpoint", checkpointLoad},
	{"idle", idle},
}

func newSim(o *options, e *env, log *slog.Logger, out io.Writer) *sim {
	return &sim{o: o, e: e, fl: e.fl, log: log, out: out}
}

// runAll brings the fleet up, then runs every scenario asked for (and
// cold-local in any case: it starts the coordinators). An error is a
// failure of the simulator itself; a scenario's own failure is recorded in
// its result and the next one runs.
func (s *sim) runAll(ctx context.Context) error {
	fmt.Fprintf(s.out, "fleetsim: %d agents x %d local files, %d shared files seen by %d agents each (%d per agent); etcd %v; work dir %s\n",
		s.o.agents, s.o.files, s.fl.sharedTotal, s.o.sharedReplicas, s.o.sharedPerAgent(), s.o.endpoints, s.e.dir)
	if err := s.fleetUp(ctx); err != nil {
		return err
	}
	for _, sc := range scenarios {
		if sc.name != "cold-local" && !s.o.wants(sc.name) {
			continue
		}
		if s.unsettled {
			r := &result{name: sc.name, headline: "skipped"}
			r.fail("skipped: the fleet did not settle after the scenario before")
			s.results = append(s.results, r)
			continue
		}
		if id := s.e.co.exited(); id != "" {
			return fmt.Errorf("coordinator %s exited by itself before %s (see %s/%s.log)", id, sc.name, s.e.dir, id)
		}
		r := &result{name: sc.name}
		lost0, err := s.fl.leaseLosses()
		if err != nil {
			return err
		}
		start := time.Now()
		s.e.sm.take(ctx)
		if err := sc.run(ctx, s, r); err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		lost, err := s.fl.leaseLosses()
		if err != nil {
			return err
		}
		r.leasesLost = lost - lost0
		s.e.sm.take(ctx)
		end := time.Now()
		if !r.from.IsZero() {
			start = r.from
		}
		if !r.to.IsZero() {
			end = r.to
		}
		r.w = s.e.sm.window(start, end)
		if s.o.wants(sc.name) {
			s.results = append(s.results, r)
			s.print(r)
		} else if r.failed != "" {
			return fmt.Errorf("scenario %s (run to start the coordinators): %s", sc.name, r.failed)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// fleetUp writes the local topic and starts every agent, before any
// coordinator runs.
func (s *sim) fleetUp(ctx context.Context) error {
	start := time.Now()
	if err := s.putTopic(ctx, localTopic, topics.Config{Paths: []string{"/var/log/fleetsim/*.log"}}); err != nil {
		return err
	}
	if _, err := s.fl.addAgents(ctx, s.o.agents, 0, true); err != nil {
		return err
	}
	took, ok := s.await(ctx, func() bool { return s.fl.leasesHeld() == s.o.agents })
	if !ok {
		return fmt.Errorf("only %d of %d agents hold a lease with their keys written after %v", s.fl.leasesHeld(), s.o.agents, took)
	}
	fmt.Fprintf(s.out, "fleet up: %d agents hold their leases, status and heartbeat keys written, in %v\n",
		s.o.agents, since(start))
	return nil
}

func (s *sim) putTopic(ctx context.Context, name string, cfg topics.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := topics.NewStore(s.e.cli, s.e.ks).Put(ctx, name, cfg); err != nil {
		return fmt.Errorf("create topic %s: %w", name, err)
	}
	return nil
}

// await polls cond every 20 ms until it holds (true) or --converge-timeout
// passes (false); it returns how long it waited. A wait for a condition,
// not a sleep.
func (s *sim) await(ctx context.Context, cond func() bool) (time.Duration, bool) {
	return awaitFor(ctx, s.o.timeout, cond)
}

func awaitFor(ctx context.Context, limit time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > limit {
			return time.Since(start), false
		}
		select {
		case <-ctx.Done():
			return time.Since(start), false
		case <-tick.C:
		}
	}
	return time.Since(start), true
}

// leaderNow is the current leader id; a read error is returned.
func (s *sim) leaderNow(ctx context.Context) (string, error) { return s.e.co.leader(ctx) }

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
