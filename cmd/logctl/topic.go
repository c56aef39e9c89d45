package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/roles"
	"github.com/logferry/logferry/pkg/topics"
)

func newTopicCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "Add, show, list and remove topic directories",
	}
	cmd.AddCommand(newTopicPutCmd(a), newTopicGetCmd(a), newTopicListCmd(a), newTopicRmCmd(a))
	return cmd
}

type putFlags struct {
	cfg         topics.Config
	ignoreOlder time.Duration
	mlPattern   string
	mlNegate    bool
	mlMatch     string
	mlMaxLines  int
	mlTimeout   time.Duration
	dryRun      bool
}

func newTopicPutCmd(a *app) *cobra.Command {
	var f putFlags
	cmd := &cobra.Command{
		Use:   "put P --path GLOB [--path GLOB...] [flags]",
		Short: "Create or replace topic directory P",
		Long: `Create or replace topic directory P: every agent whose host has files matching
the globs starts shipping them to Kafka. The config is validated exactly as the
agents and coordinator validate it; nothing is written if it is invalid.`,
		Example: `  logctl topic put nginx --path '/var/log/nginx/*.log' --exclude '*.gz'
  logctl topic put app --path '/mnt/shared/app/**/*.log' --shared --kafka-topic app-logs
  logctl topic put java --path '/var/log/svc/*.log' --multiline-pattern '^\s' --dry-run`,
		Args: exactArgs(1, "the topic name P"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			cfg := f.cfg
			cfg.IgnoreOlder = topics.Duration(f.ignoreOlder)
			if cmd.Flags().Changed("multiline-pattern") || f.mlPattern != "" {
				cfg.Multiline = &topics.Multiline{
					Pattern: f.mlPattern, Negate: f.mlNegate, Match: f.mlMatch,
					MaxLines: f.mlMaxLines, Timeout: topics.Duration(f.mlTimeout),
				}
			} else if anyChanged(cmd, "multiline-negate", "multiline-match", "multiline-max-lines", "multiline-timeout") {
				return usageErr(errors.New("the --multiline-* flags need --multiline-pattern"))
			}
			if err := cfg.Validate(name); err != nil {
				return err
			}
			if f.dryRun {
				return writeJSON(a.stdout, cfg)
			}
			return a.withEtcd(func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error {
				// Grant first, so that agents may heartbeat the topic as
				// soon as they see its config.
				a.syncAgentRole(ctx, cli, ks, name, true)
				stored, err := topics.NewStore(cli, ks).Put(ctx, name, cfg)
				if err != nil {
					return err
				}
				if a.output == "json" {
					return writeJSON(a.stdout, stored)
				}
				fmt.Fprintf(a.stdout, "topic %s written to %s (kafka topic %s)\n", name, ks.Topic(name), stored.KafkaTopic)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&f.cfg.Paths, "path", nil, "absolute glob of files to ship (repeatable; ** matches directories)")
	fl.StringArrayVar(&f.cfg.Exclude, "exclude", nil, "glob of files to skip (repeatable): absolute globs match the path, others the base name")
	fl.StringVar(&f.cfg.KafkaTopic, "kafka-topic", "", "Kafka topic to ship to (default: P)")
	fl.BoolVar(&f.cfg.Shared, "shared", false, "the paths are on a volume every host mounts: each file is shipped by one host")
	fl.StringVar(&f.cfg.Key, "key", topics.KeyFile, "Kafka partition key: file, host or none")
	fl.StringVar(&f.cfg.StartAt, "start-at", topics.StartBeginning, "where to start files never seen before: beginning or end")
	fl.IntVar(&f.cfg.MaxLineBytes, "max-line-bytes", topics.DefaultMaxLineBytes, "longest record value; longer lines are split or truncated and flagged")
	fl.StringVar(&f.cfg.LongLines, "long-lines", topics.LongLinesSplit, "what to do with lines over --max-line-bytes: split or truncate")
	fl.DurationVar(&f.ignoreOlder, "ignore-older", 0, "skip files not modified for this long (0: never skip)")
	fl.BoolVar(&f.cfg.Paused, "paused", false, "keep assignments and checkpoints but ship nothing")
	fl.StringVar(&f.mlPattern, "multiline-pattern", "", "regular expression that marks continuation lines (enables multiline)")
	fl.BoolVar(&f.mlNegate, "multiline-negate", false, "continuation lines are those that do NOT match the pattern")
	fl.StringVar(&f.mlMatch, "multiline-match", topics.MatchAfter, "continuation lines belong to the line before (after) or after (before) them")
	fl.IntVar(&f.mlMaxLines, "multiline-max-lines", topics.DefaultMultilineMaxLines, "cut an event at this many lines (flagged)")
	fl.DurationVar(&f.mlTimeout, "multiline-timeout", topics.DefaultMultilineTimeout, "ship a pending event after this long without a new line")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the JSON that would be written and write nothing")
	return cmd
}

func newTopicGetCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "get P",
		Short: "Print topic directory P's config as JSON",
		Args:  exactArgs(1, "the topic name P"),
		RunE: func(_ *cobra.Command, args []string) error {
			return a.withEtcd(func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error {
				e, err := topics.NewStore(cli, ks).Get(ctx, args[0])
				if errors.Is(err, topics.ErrInvalid) {
					// Show what is stored so the operator can fix it.
					fmt.Fprintf(a.stdout, "%s\n", e.Raw)
				}
				if err != nil {
					return err
				}
				return writeJSON(a.stdout, e.Config)
			})
		},
	}
}

func newTopicListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List topic directories, invalid ones with their error",
		Args:  exactArgs(0, ""),
		RunE: func(_ *cobra.Command, _ []string) error {
			return a.withEtcd(func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error {
				entries, junk, err := topics.NewStore(cli, ks).List(ctx)
				if err != nil {
					return err
				}
				if a.output == "json" {
					type item struct {
						Name   string         `json:"name"`
						Config *topics.Config `json:"config,omitempty"`
						Error  string         `json:"error,omitempty"`
					}
					out := struct {
						Topics   []item   `json:"topics"`
						JunkKeys []string `json:"junk_keys"`
					}{Topics: []item{}, JunkKeys: junk}
					for _, e := range entries {
						it := item{Name: e.Name}
						if e.Err != nil {
							it.Error = e.Err.Error()
						} else {
							it.Config = &e.Config
						}
						out.Topics = append(out.Topics, it)
					}
					return writeJSON(a.stdout, out)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TOPIC\tKAFKA TOPIC\tSHARED\tPAUSED\tPATHS\tERROR")
				for _, e := range entries {
					if e.Err != nil {
						fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s\n", e.Name, e.Err)
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%t\t%t\t%s\t\n", e.Name, e.Config.KafkaTopic, e.Config.Shared,
						e.Config.Paused, strings.Join(e.Config.Paths, ","))
				}
				for _, k := range junk {
					fmt.Fprintf(tw, "?\t-\t-\t-\t-\tunparsable key %q\n", k)
				}
				return tw.Flush()
			})
		},
	}
}

func newTopicRmCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "rm P",
		Aliases: []string{"delete"},
		Short:   "Remove topic directory P; agents stop shipping it",
		Args:    exactArgs(1, "the topic name P"),
		RunE: func(_ *cobra.Command, args []string) error {
			return a.withEtcd(func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error {
				if err := topics.NewStore(cli, ks).Delete(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "topic %s removed\n", args[0])
				left, err := awaitHeartbeatsGone(ctx, cli, ks, args[0], a.timeout/2)
				if err != nil || left > 0 {
					fmt.Fprintf(a.stderr, "logctl: warning: %d heartbeats of topic %s still there (%v): role %s keeps its range "+
						"so their agents can delete them; `logctl roles apply` revokes it once they are gone\n", left, args[0], err, roles.Agent)
					return nil
				}
				a.syncAgentRole(ctx, cli, ks, args[0], false)
				return nil
			})
		},
	}
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			if n == 0 {
				return usageErr(fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args))
			}
			return usageErr(fmt.Errorf("%s wants %s, got %d arguments %q", cmd.CommandPath(), what, len(args), args))
		}
		return nil
	}
}

func anyChanged(cmd *cobra.Command, names ...string) bool {
	for _, n := range names {
		if cmd.Flags().Changed(n) {
			return true
		}
	}
	return false
}

func writeJSON(w interface{ Write([]byte) (int, error) }, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
