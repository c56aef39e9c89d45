package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/roles"
)

func newRolesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "roles",
		Short: "Manage the etcd roles logferry's components run under",
	}
	cmd.AddCommand(newRolesApplyCmd(a))
	return cmd
}

func newRolesApplyCmd(a *app) *cobra.Command {
	var agents []string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply [--agent ID...]",
		Short: "Create or update the roles logferry-agent, logferry-coordinator, logferry-operator and one per agent",
		Long: `Create or update etcd's roles for logferry, each with the least privilege its
component needs, under --etcd-prefix. Run it with etcd's root user (role
management needs it). It converges: permissions a role should not have are
revoked, and a second run changes nothing.

  logferry-agent        every agent: read topic configs, write the heartbeats of
                        each existing topic (not the configs), read and write
                        checkpoints
  logferry-agent-<ID>   one per agent: its own assignments and status key
  logferry-coordinator  the coordinators: assignments, election, status
  logferry-operator     people and scripts: topic configs, reading everything

Each agent's user needs both logferry-agent and logferry-agent-<ID>. Roles of
agents named before are kept up to date. Users are etcdctl's business
(etcdctl user add, etcdctl user grant-role).`,
		Example: `  logctl --etcd-user root roles apply --agent 10.0.0.5 --agent 10.0.0.6
  logctl --etcd-user root roles apply --dry-run`,
		Args: exactArgs(0, ""),
		RunE: func(_ *cobra.Command, _ []string) error {
			return a.withEtcd(func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error {
				topicNames, err := roles.Topics(ctx, cli, ks)
				if err != nil {
					return err
				}
				known, err := roles.ListAgentRoles(ctx, cli.Auth)
				if err != nil {
					return err
				}
				for _, id := range known {
					if !slices.Contains(agents, id) {
						agents = append(agents, id)
					}
				}
				want, err := roles.Desired(ks, topicNames, agents)
				if err != nil {
					return usageErr(fmt.Errorf("--agent: %w", err))
				}
				changes, err := roles.Apply(ctx, cli.Auth, want, dryRun)
				verb := ""
				if dryRun {
					verb = "would "
				}
				for _, c := range changes {
					fmt.Fprintf(a.stdout, "%s%s\n", verb, c)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "%d roles, %d changes\n", len(want), len(changes))
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVar(&agents, "agent", nil, "agent id to create or update a role of its own for (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change and change nothing")
	return cmd
}

// syncAgentRole keeps the agent role in step after topic put (exists) or
// rm. Without root credentials it only warns: the config change stands,
// and the warning says how to catch up. A cluster without the agent role
// does not use roles, and gets no warning.
func (a *app) syncAgentRole(ctx context.Context, cli *clientv3.Client, ks keyspace.Space, topic string, exists bool) {
	err := roles.SyncTopic(ctx, cli.Auth, ks, topic, exists)
	switch {
	case err == nil, errors.Is(err, roles.ErrNoAgentRole):
		return
	case errors.Is(err, rpctypes.ErrPermissionDenied), errors.Is(err, rpctypes.ErrUserEmpty):
		fmt.Fprintf(a.stderr, "logctl: warning: role %s not updated for topic %s (these credentials may not manage roles); "+
			"run `logctl roles apply` as etcd's root user, or agents cannot heartbeat the topic\n", roles.Agent, topic)
	default:
		fmt.Fprintf(a.stderr, "logctl: warning: role %s not updated for topic %s: %v; run `logctl roles apply` as etcd's root user\n",
			roles.Agent, topic, err)
	}
}

// awaitHeartbeatsGone waits, at most wait, for the agents to delete their
// heartbeats of a removed topic: the agent role must keep the topic's range
// until then, or the agents could not delete them.
func awaitHeartbeatsGone(ctx context.Context, cli *clientv3.Client, ks keyspace.Space, topic string, wait time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := cli.Get(ctx, ks.HeartbeatsPrefix(topic), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return -1, err
		}
		if resp.Count == 0 {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return resp.Count, nil
		case <-tick.C:
		}
	}
}
