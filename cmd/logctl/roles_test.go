package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/roles"
)

// TestRolesApplyAndTopicSync: roles apply, as root, creates the roles;
// topic put and rm with root credentials grant and revoke the topic's
// heartbeat range; with an operator's credentials the config is written and
// a warning says the role was not updated.
func TestRolesApplyAndTopicSync(t *testing.T) {
	e := testenv.StartSecureEtcd(t)
	root := e.Root()
	asRoot := func(args ...string) result {
		t.Setenv("LOGCTL_ETCD_PASSWORD", e.RootPassword)
		return logctl(append(append(e.ClientFlags("root"), "--etcd-prefix", "/prod"), args...)...)
	}
	heartbeatRange := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := root.RoleGet(ctx, roles.Agent)
		require.NoError(t, err)
		for _, p := range resp.Perm {
			if string(p.Key) == "/prod/topics/db/" && string(p.RangeEnd) == "/prod/topics/db0" {
				return true
			}
		}
		return false
	}

	r := asRoot("roles", "apply", "--agent", "10.0.0.1", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "would logferry-agent-10.0.0.1: add role")
	r = asRoot("roles", "apply", "--agent", "10.0.0.1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "logferry-coordinator: grant readwrite range [/prod/coordinator/election/, /prod/coordinator/election0)")
	r = asRoot("roles", "apply")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "4 roles, 0 changes", "the agent's own role is kept without --agent")

	r = asRoot("topic", "put", "db", "--path", "/var/log/db/*.log")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stderr)
	require.True(t, heartbeatRange(), "topic put grants the agents the topic's heartbeats")

	// A heartbeat still there keeps the range through topic rm.
	ctx := context.Background()
	_, err := root.Put(ctx, "/prod/topics/db/10.0.0.1", "{}")
	require.NoError(t, err)
	r = asRoot("topic", "rm", "db", "--timeout", "1s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "1 heartbeats of topic db still there")
	require.True(t, heartbeatRange())
	_, err = root.Delete(ctx, "/prod/topics/db/10.0.0.1")
	require.NoError(t, err)
	r = asRoot("roles", "apply")
	require.Equal(t, 0, r.code, r.stderr)
	require.False(t, heartbeatRange(), "roles apply revokes the range of a topic that is gone")

	r = asRoot("topic", "put", "db", "--path", "/var/log/db/*.log")
	require.Equal(t, 0, r.code, r.stderr)
	r = asRoot("topic", "rm", "db")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stderr)
	require.False(t, heartbeatRange(), "topic rm revokes the range once no heartbeat is left")

	e.AddUser("alice", "alice-pw", roles.Operator)
	t.Setenv("LOGCTL_ETCD_PASSWORD", "alice-pw")
	r = logctl(append(append(e.ClientFlags("alice"), "--etcd-prefix", "/prod"), "topic", "put", "db", "--path", "/var/log/db/*.log")...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "warning: role logferry-agent not updated for topic db")
	require.NotContains(t, r.stderr+r.stdout, "alice-pw")
	require.False(t, heartbeatRange())
}
