package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
)

// print writes one scenario's table: its own figures, then what etcd and
// the leader process did during it.
func (s *sim) print(r *result) {
	fmt.Fprintf(s.out, "\n== %s (%d agents x %d files) ==\n", r.name, s.o.agents, s.o.files)
	tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
	for _, row := range r.rows {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	fmt.Fprintf(tw, "  agent leases lost (whole scenario)\t%.0f\n", r.leasesLost)
	for _, row := range windowRows(r.w) {
		fmt.Fprintf(tw, "  %s\t%s\n", row[0], row[1])
	}
	if r.failed != "" {
		fmt.Fprintf(tw, "  FAILED\t%s\n", r.failed)
	}
	tw.Flush()
}

func windowRows(w window) [][2]string {
	if w.secs == 0 {
		return [][2]string{{"etcd and leader", "no samples (scenario shorter than --sample-interval)"}}
	}
	keys := "n/a (no mvcc counters on etcd's /metrics)"
	if w.keysPerSec >= 0 {
		keys = fmt.Sprintf("%.0f avg, %.0f peak", w.keysPerSec, w.peakKeysPerSec)
	}
	cpu := "n/a"
	if w.leaderCPU >= 0 {
		cpu = fmt.Sprintf("%.1f%% of one core", w.leaderCPU)
	}
	return [][2]string{
		{"scenario wall time", fmt.Sprintf("%.1f s", w.secs)},
		{"etcd keys written/s", keys},
		{"etcd write Txn/s (revisions)", fmt.Sprintf("%.0f avg, %.0f peak", w.txnPerSec, w.peakTxnPerSec)},
		{"etcd history growth", fmt.Sprintf("%d revisions, db %s -> %s", w.revs, mib(w.dbStart), mib(w.dbEnd))},
		{"leader terms seen", fmt.Sprintf("%d (%s)", w.terms, strings.Join(w.leaders, " -> "))},
		{"leader VmRSS max / VmHWM", fmt.Sprintf("%s / %s", mib(w.leaderRSS), mib(w.leaderHW))},
		{"standby VmRSS max / VmHWM", fmt.Sprintf("%s / %s", mib(w.standbyRSS), mib(w.standbyHW))},
		{"leader CPU", cpu},
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// summary is the final table: one line per scenario.
func (s *sim) summary() {
	fmt.Fprintf(s.out, "\n== summary (%d agents x %d files, %d shared files) ==\n", s.o.agents, s.o.files, s.fl.sharedTotal)
	tw := tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  scenario\tresult\tetcd keys/s avg\tleader CPU\tleader RSS max\tstandby RSS max\tleader terms\tstatus")
	for _, r := range s.results {
		if r.headline == "skipped" {
			fmt.Fprintf(tw, "  %s\tskipped\t-\t-\t-\t-\t-\tFAILED: %s\n", r.name, r.failed)
			continue
		}
		status := "ok"
		if r.failed != "" {
			status = "FAILED: " + r.failed
		}
		keys := "n/a"
		if r.w.keysPerSec >= 0 {
			keys = fmt.Sprintf("%.0f", r.w.keysPerSec)
		}
		cpu := "n/a"
		if r.w.leaderCPU >= 0 {
			cpu = fmt.Sprintf("%.0f%%", r.w.leaderCPU)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.name, r.headline, keys, cpu, mib(r.w.leaderRSS), mib(r.w.standbyRSS), r.w.terms, status)
	}
	tw.Flush()
}

// failures lists the failed scenarios with their reasons.
func (s *sim) failures() []string {
	var out []string
	for _, r := range s.results {
		if r.failed != "" {
			out = append(out, r.name+": "+r.failed)
		}
	}
	return out
}
