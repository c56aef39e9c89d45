package roles

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
)

// The role names.
const (
	Agent       = "logferry-agent"
	Coordinator = "logferry-coordinator"
	Operator    = "logferry-operator"
	// AgentPrefix begins the name of each agent's own role, followed by the
	// agent id.
	AgentPrefix = Agent + "-"
)

// Access is what a permission allows.
type Access = clientv3.PermissionType

// The accesses, as etcd names them.
var (
	Read      = clientv3.PermissionType(clientv3.PermRead)
	ReadWrite = clientv3.PermissionType(clientv3.PermReadWrite)
)

// Perm is one permission: Access over [Key, RangeEnd), or over the key Key
// alone when RangeEnd is empty.
type Perm struct {
	Key, RangeEnd string
	Access        Access
}

func (p Perm) String() string {
	what := "key " + p.Key
	if p.RangeEnd != "" {
		what = fmt.Sprintf("range [%s, %s)", p.Key, p.RangeEnd)
	}
	access := "read"
	if p.Access == ReadWrite {
		access = "readwrite"
	}
	return access + " " + what
}

// prefix is the permission over every key that starts with p.
func prefix(p string, a Access) Perm {
	return Perm{Key: p, RangeEnd: clientv3.GetPrefixRangeEnd(p), Access: a}
}

// HeartbeatPerm is the agents' permission over topic P's heartbeats:
// [/topics/P/, /topics/P0), which leaves out the config key /topics/P.
func HeartbeatPerm(ks keyspace.Space, topic string) Perm {
	return prefix(ks.HeartbeatsPrefix(topic), ReadWrite)
}

// AgentPerms is the shared agent role for the given topics.
func AgentPerms(ks keyspace.Space, topics []string) []Perm {
	// The coordinator's status is read for the fleet's file count, which
	// sizes the agents' etcd checkpoint interval.
	perms := []Perm{prefix(ks.TopicsPrefix(), Read), prefix(ks.OffsetsPrefix(), ReadWrite),
		{Key: ks.CoordinatorStatus(), Access: Read}}
	for _, t := range topics {
		perms = append(perms, HeartbeatPerm(ks, t))
	}
	return perms
}

// AgentOwnPerms is agent id's own role.
func AgentOwnPerms(ks keyspace.Space, id string) []Perm {
	return []Perm{
		prefix(ks.AgentAssignPrefix(id), ReadWrite),
		{Key: ks.AgentStatus(id), Access: ReadWrite},
	}
}

// CoordinatorPerms is the coordinators' role.
func CoordinatorPerms(ks keyspace.Space) []Perm {
	return []Perm{
		prefix(ks.TopicsPrefix(), Read),
		// Write: etcd has no delete-only permission, and the leader
		// deletes the checkpoints of files gone for the retention.
		prefix(ks.OffsetsPrefix(), ReadWrite),
		prefix(ks.AssignPrefix(), ReadWrite),
		prefix(ks.ElectionPrefix(), ReadWrite),
		prefix(ks.TopicStatusPrefix(), ReadWrite),
		{Key: ks.CoordinatorStatus(), Access: ReadWrite},
	}
}

// OperatorPerms is the operators' role.
func OperatorPerms(ks keyspace.Space) []Perm {
	return []Perm{
		prefix(ks.TopicsPrefix(), ReadWrite),
		prefix(ks.AssignPrefix(), ReadWrite),
		prefix(ks.OffsetsPrefix(), Read),
		prefix(ks.StatusPrefix(), Read),
		prefix(ks.Root()+"/coordinator/", Read),
	}
}

// Desired is every role and its permissions: the three shared roles (the
// agent role over topics) and one role per agent id.
func Desired(ks keyspace.Space, topics, agents []string) (map[string][]Perm, error) {
	want := map[string][]Perm{
		Agent:       AgentPerms(ks, topics),
		Coordinator: CoordinatorPerms(ks),
		Operator:    OperatorPerms(ks),
	}
	for _, id := range agents {
		if err := keyspace.ValidateAgent(id); err != nil {
			return nil, fmt.Errorf("agent role for %q: %w", id, err)
		}
		want[AgentPrefix+id] = AgentOwnPerms(ks, id)
	}
	return want, nil
}

// Change is one thing Apply did (or, dry, would do).
type Change struct {
	Role   string
	Action string // "add role", "grant" or "revoke"
	Perm   Perm   // unset for "add role"
}

func (c Change) String() string {
	if c.Action == "add role" {
		return fmt.Sprintf("%s: add role", c.Role)
	}
	return fmt.Sprintf("%s: %s %s", c.Role, c.Action, c.Perm)
}

// Apply makes every role in want hold exactly its permissions. With dry set
// it only reports what it would change.
func Apply(ctx context.Context, auth clientv3.Auth, want map[string][]Perm, dry bool) ([]Change, error) {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	var changes []Change
	for _, name := range names {
		c, err := applyRole(ctx, auth, name, want[name], dry)
		changes = append(changes, c...)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

func applyRole(ctx context.Context, auth clientv3.Auth, name string, want []Perm, dry bool) ([]Change, error) {
	var changes []Change
	have, err := rolePerms(ctx, auth, name)
	if errors.Is(err, rpctypes.ErrRoleNotFound) {
		changes = append(changes, Change{Role: name, Action: "add role"})
		if !dry {
			if _, err := auth.RoleAdd(ctx, name); err != nil {
				return changes, fmt.Errorf("add role %s: %w", name, err)
			}
		}
	} else if err != nil {
		return nil, err
	}
	for _, p := range have {
		if !slices.Contains(want, p) && !slices.ContainsFunc(want, sameRange(p)) {
			changes = append(changes, Change{Role: name, Action: "revoke", Perm: p})
			if !dry {
				if _, err := auth.RoleRevokePermission(ctx, name, p.Key, p.RangeEnd); err != nil {
					return changes, fmt.Errorf("role %s: revoke %s: %w", name, p, err)
				}
			}
		}
	}
	for _, p := range want {
		if !slices.Contains(have, p) {
			changes = append(changes, Change{Role: name, Action: "grant", Perm: p})
			if !dry {
				if err := grant(ctx, auth, name, p); err != nil {
					return changes, err
				}
			}
		}
	}
	return changes, nil
}

// sameRange matches a permission over the range of p: granting over it
// replaces p's access, so p needs no revoke first.
func sameRange(p Perm) func(Perm) bool {
	return func(q Perm) bool { return q.Key == p.Key && q.RangeEnd == p.RangeEnd }
}

func grant(ctx context.Context, auth clientv3.Auth, role string, p Perm) error {
	if _, err := auth.RoleGrantPermission(ctx, role, p.Key, p.RangeEnd, p.Access); err != nil {
		return fmt.Errorf("role %s: grant %s: %w", role, p, err)
	}
	return nil
}

// rolePerms reads a role's permissions; an error wraps
// rpctypes.ErrRoleNotFound when there is no such role.
func rolePerms(ctx context.Context, auth clientv3.Auth, name string) ([]Perm, error) {
	resp, err := auth.RoleGet(ctx, name)
	if err != nil {
		if errors.Is(rpctypes.Error(err), rpctypes.ErrRoleNotFound) {
			return nil, fmt.Errorf("role %s: %w", name, rpctypes.ErrRoleNotFound)
		}
		return nil, fmt.Errorf("read role %s: %w", name, err)
	}
	perms := make([]Perm, 0, len(resp.Perm))
	for _, p := range resp.Perm {
		perms = append(perms, Perm{Key: string(p.Key), RangeEnd: string(p.RangeEnd), Access: Access(p.PermType)})
	}
	return perms, nil
}

// ListAgentRoles returns the ids of the agents that have a role of their own.
func ListAgentRoles(ctx context.Context, auth clientv3.Auth) ([]string, error) {
	resp, err := auth.RoleList(ctx)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	var ids []string
	for _, r := range resp.Roles {
		if id, ok := strings.CutPrefix(r, AgentPrefix); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// ErrNoAgentRole is returned by SyncTopic when the cluster has no agent
// role: roles are not in use there, and there is nothing to keep in step.
var ErrNoAgentRole = errors.New("roles: no " + Agent + " role in this cluster")

// SyncTopic keeps the agent role in step with one topic: it grants the
// topic's heartbeat range when exists is true and revokes it otherwise.
func SyncTopic(ctx context.Context, auth clientv3.Auth, ks keyspace.Space, topic string, exists bool) error {
	have, err := rolePerms(ctx, auth, Agent)
	if errors.Is(err, rpctypes.ErrRoleNotFound) {
		return ErrNoAgentRole
	}
	if err != nil {
		return err
	}
	p := HeartbeatPerm(ks, topic)
	switch {
	case exists && !slices.Contains(have, p):
		return grant(ctx, auth, Agent, p)
	case !exists && slices.ContainsFunc(have, sameRange(p)):
		if _, err := auth.RoleRevokePermission(ctx, Agent, p.Key, p.RangeEnd); err != nil {
			return fmt.Errorf("role %s: revoke %s: %w", Agent, p, err)
		}
	}
	return nil
}

// Topics lists the topics that have keys under /topics/: a config, or
// heartbeats left by agents. The agent role keeps the heartbeat range of
// each, since an agent must be able to delete its heartbeats (and revoke the
// lease they are attached to) after the topic's config is gone.
func Topics(ctx context.Context, kv clientv3.KV, ks keyspace.Space) ([]string, error) {
	resp, err := kv.Get(ctx, ks.TopicsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", ks.TopicsPrefix(), err)
	}
	seen := map[string]bool{}
	var out []string
	for _, kv := range resp.Kvs {
		k, err := ks.Parse(string(kv.Key))
		if err != nil || seen[k.Topic] {
			continue // junk keys get no permission
		}
		seen[k.Topic] = true
		out = append(out, k.Topic)
	}
	return out, nil
}
