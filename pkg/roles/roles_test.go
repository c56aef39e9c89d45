package roles

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
	"github.com/logferry/logferry/pkg/keyspace"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// op is one request a role's user makes, and whether etcd must allow it.
type op struct {
	name  string
	do    func(context.Context, *clientv3.Client) error
	allow bool
}

func put(k string) func(context.Context, *clientv3.Client) error {
	return func(c context.Context, cli *clientv3.Client) error { _, err := cli.Put(c, k, "v"); return err }
}

func del(k string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) error {
	return func(c context.Context, cli *clientv3.Client) error { _, err := cli.Delete(c, k, opts...); return err }
}

func get(k string, opts ...clientv3.OpOption) func(context.Context, *clientv3.Client) error {
	return func(c context.Context, cli *clientv3.Client) error { _, err := cli.Get(c, k, opts...); return err }
}

func checkOps(t *testing.T, cli *clientv3.Client, who string, ops []op) {
	t.Helper()
	for _, o := range ops {
		err := o.do(ctx(t), cli)
		if o.allow {
			require.NoError(t, err, "%s must be allowed to %s", who, o.name)
		} else {
			require.ErrorIs(t, rpctypes.Error(err), rpctypes.ErrPermissionDenied, "%s must be refused %s", who, o.name)
		}
	}
}

// TestRolesEnforced applies the roles to an etcd that requires TLS and
// auth, under a root prefix, and checks with each role's user that exactly
// what the component's code does is allowed and the rest refused.
func TestRolesEnforced(t *testing.T) {
	e := testenv.StartSecureEtcd(t)
	root := e.Root()
	ks, err := keyspace.New("/prod")
	require.NoError(t, err)
	want, err := Desired(ks, []string{"web", "db"}, []string{"10.0.0.1"})
	require.NoError(t, err)
	changes, err := Apply(ctx(t), root.Auth, want, false)
	require.NoError(t, err)
	require.NotEmpty(t, changes)
	again, err := Apply(ctx(t), root.Auth, want, false)
	require.NoError(t, err)
	require.Empty(t, again, "a second apply changes nothing")

	e.AddUser("10.0.0.1", "agent-pw", Agent, AgentPrefix+"10.0.0.1")
	e.AddUser("coord", "coord-pw", Coordinator)
	e.AddUser("ops", "ops-pw", Operator)
	for _, k := range []string{"/prod/topics/web", "/prod/coordinator/election/694d", "/prod/status/coordinator"} {
		_, err := root.Put(ctx(t), k, "x")
		require.NoError(t, err)
	}

	checkOps(t, e.ClientAs("10.0.0.1", "agent-pw"), "agent", []op{
		{"watch-read every topic config", get("/prod/topics/", clientv3.WithPrefix()), true},
		{"write its heartbeat", put("/prod/topics/web/10.0.0.1"), true},
		{"delete its heartbeat", del("/prod/topics/web/10.0.0.1"), true},
		{"write a heartbeat of another topic it was granted", put("/prod/topics/db/10.0.0.1"), true},
		{"write a topic config", put("/prod/topics/web"), false},
		{"delete a topic config", del("/prod/topics/web"), false},
		{"write a heartbeat of a topic not granted", put("/prod/topics/webx/10.0.0.1"), false},
		{"write a checkpoint", put("/prod/offsets/web/f1"), true},
		{"read checkpoints", get("/prod/offsets/web/", clientv3.WithPrefix()), true},
		{"read its assignments", get("/prod/assign/10.0.0.1/", clientv3.WithPrefix()), true},
		{"release (delete) its assignment", del("/prod/assign/10.0.0.1/web/f1"), true},
		{"read another agent's assignments", get("/prod/assign/10.0.0.2/", clientv3.WithPrefix()), false},
		{"write an assignment to another agent", put("/prod/assign/10.0.0.2/web/f1"), false},
		{"write its status", put("/prod/status/agents/10.0.0.1"), true},
		{"write another agent's status", put("/prod/status/agents/10.0.0.2"), false},
		{"delete the election keys", del("/prod/coordinator/election/694d"), false},
		{"read the election", get("/prod/coordinator/election/", clientv3.WithPrefix()), false},
		{"write the coordinator status", put("/prod/status/coordinator"), false},
		{"read the coordinator status (the fleet's size)", get("/prod/status/coordinator"), true},
		{"write a topic status", put("/prod/status/topics/web"), false},
		{"write outside the root", put("/topics/web"), false},
	})
	checkOps(t, e.ClientAs("coord", "coord-pw"), "coordinator", []op{
		{"read topics and heartbeats", get("/prod/topics/", clientv3.WithPrefix()), true},
		{"read checkpoints", get("/prod/offsets/", clientv3.WithPrefix()), true},
		{"delete a gone file's checkpoint", del("/prod/offsets/web/f0"), true},
		{"write an assignment", put("/prod/assign/10.0.0.2/web/f1"), true},
		{"delete an assignment", del("/prod/assign/10.0.0.2/web/f1"), true},
		{"campaign", put("/prod/coordinator/election/7a"), true},
		{"write the coordinator status", put("/prod/status/coordinator"), true},
		{"write and delete topic statuses", del("/prod/status/topics/", clientv3.WithPrefix()), true},
		{"write a topic config", put("/prod/topics/web"), false},
		{"write a heartbeat", put("/prod/topics/web/10.0.0.9"), false},
		{"write an agent status", put("/prod/status/agents/10.0.0.1"), false},
		{"compact (etcd reserves it to root)", func(c context.Context, cli *clientv3.Client) error {
			_, err := cli.Compact(c, 1)
			return err
		}, false},
	})
	checkOps(t, e.ClientAs("ops", "ops-pw"), "operator", []op{
		{"write a topic config", put("/prod/topics/new"), true},
		{"delete a topic config", del("/prod/topics/new"), true},
		{"remove a stuck assignment", del("/prod/assign/10.0.0.1/web/f1"), true},
		{"read status", get("/prod/status/", clientv3.WithPrefix()), true},
		{"read the election", get("/prod/coordinator/election/", clientv3.WithPrefix()), true},
		{"write a checkpoint", put("/prod/offsets/web/f1"), false},
		{"write the coordinator status", put("/prod/status/coordinator"), false},
		{"delete the election keys", del("/prod/coordinator/election/694d"), false},
	})
}

// TestApplyConverges: a permission a role should not have is revoked, a
// changed one is replaced, and SyncTopic grants and revokes exactly one
// topic's heartbeat range.
func TestApplyConverges(t *testing.T) {
	e := testenv.StartEtcd(t) // roles exist and apply without auth enabled too
	cli := e.Client()
	ks := keyspace.Space{}
	require.ErrorIs(t, SyncTopic(ctx(t), cli.Auth, ks, "web", true), ErrNoAgentRole)

	want, err := Desired(ks, []string{"web"}, nil)
	require.NoError(t, err)
	_, err = Apply(ctx(t), cli.Auth, want, false)
	require.NoError(t, err)
	_, err = cli.RoleGrantPermission(ctx(t), Agent, "/coordinator/", "/coordinator0", ReadWrite)
	require.NoError(t, err)
	_, err = cli.RoleGrantPermission(ctx(t), Operator, "/offsets/", "/offsets0", ReadWrite)
	require.NoError(t, err)
	dry, err := Apply(ctx(t), cli.Auth, want, true)
	require.NoError(t, err)
	require.Len(t, dry, 2, "%v", dry)
	changes, err := Apply(ctx(t), cli.Auth, want, false)
	require.NoError(t, err)
	require.Equal(t, dry, changes, "a dry run reports what a real one does")
	require.Contains(t, changes, Change{Role: Agent, Action: "revoke", Perm: Perm{Key: "/coordinator/", RangeEnd: "/coordinator0", Access: ReadWrite}})
	require.Contains(t, changes, Change{Role: Operator, Action: "grant", Perm: Perm{Key: "/offsets/", RangeEnd: "/offsets0", Access: Read}})

	require.NoError(t, SyncTopic(ctx(t), cli.Auth, ks, "db", true))
	have, err := rolePerms(ctx(t), cli.Auth, Agent)
	require.NoError(t, err)
	require.Contains(t, have, Perm{Key: "/topics/db/", RangeEnd: "/topics/db0", Access: ReadWrite})
	require.NoError(t, SyncTopic(ctx(t), cli.Auth, ks, "web", false))
	have, err = rolePerms(ctx(t), cli.Auth, Agent)
	require.NoError(t, err)
	require.NotContains(t, have, Perm{Key: "/topics/web/", RangeEnd: "/topics/web0", Access: ReadWrite})
	require.ElementsMatch(t, AgentPerms(ks, []string{"db"}), have)

	_, err = Desired(ks, nil, []string{"bad id"})
	require.ErrorContains(t, err, `"bad id"`)
}
