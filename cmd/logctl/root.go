package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/internal/cliflags"
	"github.com/logferry/logferry/internal/etcdflags"
	"github.com/logferry/logferry/internal/version"
	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
)

const envPrefix = "LOGCTL"

// app holds what every subcommand shares.
type app struct {
	etcd     etcdflags.Flags
	timeout  time.Duration
	output   string
	pageSize int
	stdout   io.Writer
	stderr   io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	a := &app{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "logctl",
		Short: "Operate logferry: topic directories, status, agents, assignments, lag",
		Long: `logctl reads and writes logferry's state in etcd.

Every flag can also be set through an environment variable, shown in its help
(LOGCTL_ETCD_ENDPOINTS for --etcd-endpoints, and so on).`,
		Version:       version.String("logctl"),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr(cliflags.ApplyEnv(cmd.Flags(), envPrefix))
		},
	}
	root.SetVersionTemplate(version.String("logctl") + "\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	pf := root.PersistentFlags()
	a.etcd.Register(pf)
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline for the whole command")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.IntVar(&a.pageSize, "page-size", mirror.DefaultPageSize, "keys per etcd read when reading whole prefixes (status, agents, assignments, lag), all at one revision")
	root.AddCommand(newTopicCmd(a), newStatusCmd(a), newAgentsCmd(a), newAssignmentsCmd(a), newLagCmd(a), newRolesCmd(a))
	documentEnvTree(root)
	return root
}

func documentEnvTree(cmd *cobra.Command) {
	cliflags.DocumentEnv(cmd.PersistentFlags(), envPrefix)
	cliflags.DocumentEnv(cmd.Flags(), envPrefix)
	for _, c := range cmd.Commands() {
		documentEnvTree(c)
	}
}

func usageErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", errUsage, err)
}

// withEtcd runs f with a connected client and the key space, under the
// command's deadline and SIGINT/SIGTERM.
func (a *app) withEtcd(f func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error) error {
	if a.output != "table" && a.output != "json" {
		return usageErr(fmt.Errorf("--output %q: want table or json", a.output))
	}
	if a.pageSize < 1 {
		return usageErr(fmt.Errorf("--page-size %d: want at least 1", a.pageSize))
	}
	ks, err := a.etcd.Space()
	if err != nil {
		return usageErr(err)
	}
	cli, err := a.etcd.Connect()
	if err != nil {
		return usageErr(err)
	}
	defer cli.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return f(ctx, cli, ks)
}
