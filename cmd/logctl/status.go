package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/logferry/logferry/pkg/keyspace"
	"github.com/logferry/logferry/pkg/mirror"
	"github.com/logferry/logferry/pkg/protocol"
	"github.com/logferry/logferry/pkg/topics"
)

// state is everything logctl's read commands show, read at one revision so
// the views agree with each other.
type state struct {
	Revision    int64
	Leader      string // from the election: the candidate with the lowest create revision
	Coordinator *protocol.CoordinatorStatus
	Topics      map[string]topics.Entry
	TopicStatus map[string]protocol.TopicStatus
	Heartbeats  map[string]map[string]protocol.Heartbeat // topic -> agent -> heartbeat
	Assigns     []assignRow
	Offsets     map[string]protocol.Checkpoint // topic/file -> checkpoint
	Agents      map[string]protocol.AgentStatus
	Junk        []string
}

type assignRow struct {
	Topic string `json:"topic"`
	File  string `json:"file"`
	Agent string `json:"agent"`
	State string `json:"state"`
	Path  string `json:"path"`
	Next  string `json:"next,omitempty"`
}

// withState runs f on the state read at one revision, under the command's
// deadline; every read-only command is this.
func (a *app) withState(f func(st *state) error) error {
	return a.withEtcd(func(ctx context.Context, cli *clientv3.Client, ks keyspace.Space) error {
		st, err := readState(ctx, cli, ks, a.pageSize)
		if err != nil {
			return err
		}
		return f(st)
	})
}

// readState reads the state at one revision, in pages of pageSize keys
// (one range over a large fleet's keys would stall etcd for seconds); the
// leader is read at the same revision.
func readState(ctx context.Context, cli *clientv3.Client, ks keyspace.Space, pageSize int) (*state, error) {
	st := &state{
		Topics: map[string]topics.Entry{}, TopicStatus: map[string]protocol.TopicStatus{},
		Heartbeats: map[string]map[string]protocol.Heartbeat{}, Offsets: map[string]protocol.Checkpoint{},
		Agents: map[string]protocol.AgentStatus{},
	}
	prefixes := []string{ks.TopicsPrefix(), ks.AssignPrefix(), ks.OffsetsPrefix(), ks.StatusPrefix()}
	rev, err := mirror.ListPages(ctx, cli, prefixes, pageSize, nil, func(_ int64, page []*mvccpb.KeyValue) error {
		for _, kv := range page {
			key := string(kv.Key)
			k, err := ks.Parse(key)
			if err != nil {
				st.Junk = append(st.Junk, key)
				continue
			}
			if err := st.add(k, key, kv.Value); err != nil {
				st.Junk = append(st.Junk, fmt.Sprintf("%s (%v)", key, err))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read state from etcd: %w", err)
	}
	st.Revision = rev
	resp, err := cli.Get(ctx, ks.ElectionPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(1))
	if err != nil {
		return nil, fmt.Errorf("read the leader from etcd: %w", err)
	}
	if len(resp.Kvs) > 0 {
		st.Leader = string(resp.Kvs[0].Value)
	}
	slices.SortFunc(st.Assigns, func(a, b assignRow) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), strings.Compare(a.Path, b.Path), strings.Compare(a.File, b.File))
	})
	return st, nil
}

func (st *state) add(k keyspace.Key, key string, value []byte) error {
	switch k.Kind {
	case keyspace.KindTopic:
		cfg, err := topics.Decode(k.Topic, value)
		st.Topics[k.Topic] = topics.Entry{Name: k.Topic, Config: cfg, Err: err, Raw: value}
	case keyspace.KindHeartbeat:
		var hb protocol.Heartbeat
		if err := protocol.Unmarshal(key, value, &hb); err != nil {
			return err
		}
		if st.Heartbeats[k.Topic] == nil {
			st.Heartbeats[k.Topic] = map[string]protocol.Heartbeat{}
		}
		st.Heartbeats[k.Topic][k.Agent] = hb
	case keyspace.KindAssign:
		var a protocol.Assignment
		if err := protocol.Unmarshal(key, value, &a); err != nil {
			return err
		}
		st.Assigns = append(st.Assigns, assignRow{Topic: k.Topic, File: k.File, Agent: k.Agent, State: a.State, Path: a.Path, Next: a.Revoking})
	case keyspace.KindOffset:
		var cp protocol.Checkpoint
		if err := protocol.Unmarshal(key, value, &cp); err != nil {
			return err
		}
		st.Offsets[k.Topic+"/"+k.File] = cp
	case keyspace.KindCoordinatorStatus:
		var cs protocol.CoordinatorStatus
		if err := protocol.Unmarshal(key, value, &cs); err != nil {
			return err
		}
		st.Coordinator = &cs
	case keyspace.KindTopicStatus:
		var ts protocol.TopicStatus
		if err := protocol.Unmarshal(key, value, &ts); err != nil {
			return err
		}
		st.TopicStatus[k.Topic] = ts
	case keyspace.KindAgentStatus:
		var as protocol.AgentStatus
		if err := protocol.Unmarshal(key, value, &as); err != nil {
			return err
		}
		st.Agents[k.Agent] = as
	}
	return nil
}

// agentRow summarises one live agent.
type agentRow struct {
	Agent     string   `json:"agent"`
	Version   string   `json:"version"`
	Started   string   `json:"started"`
	Topics    []string `json:"topics"`
	FilesSeen int      `json:"files_seen"`
	Assigned  int      `json:"assigned"`
	Problems  int      `json:"problems"`
	LostBytes int64    `json:"lost_bytes"`
}

func (st *state) agentRows() []agentRow {
	rows := map[string]*agentRow{}
	get := func(id string) *agentRow {
		if rows[id] == nil {
			rows[id] = &agentRow{Agent: id, Topics: []string{}}
		}
		return rows[id]
	}
	for topic, hbs := range st.Heartbeats {
		for id, hb := range hbs {
			r := get(id)
			r.Version, r.Started = hb.Version, hb.Started.Format(time.RFC3339)
			r.Topics = append(r.Topics, topic)
			r.FilesSeen += len(hb.Files) + hb.Truncated
		}
	}
	for _, a := range st.Assigns {
		if r, ok := rows[a.Agent]; ok {
			r.Assigned++
		}
	}
	for id, as := range st.Agents {
		r := get(id)
		r.Problems, r.LostBytes = len(as.Problems)+as.Unlisted, as.LostBytes
		if r.Version == "" {
			r.Version = as.Version
		}
	}
	out := make([]agentRow, 0, len(rows))
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		slices.Sort(rows[id].Topics)
		out = append(out, *rows[id])
	}
	return out
}

// topicRow summarises one topic directory.
type topicRow struct {
	Topic    string `json:"topic"`
	State    string `json:"state"`
	Shared   bool   `json:"shared"`
	Members  int    `json:"members"`
	Files    int    `json:"files"`
	Assigned int    `json:"assigned"`
	Pending  int    `json:"pending"`
	Error    string `json:"error,omitempty"`
}

func (st *state) topicRows() []topicRow {
	var out []topicRow
	for _, name := range slices.Sorted(maps.Keys(st.Topics)) {
		e := st.Topics[name]
		r := topicRow{Topic: name, State: protocol.TopicOK, Shared: e.Config.Shared, Members: len(st.Heartbeats[name])}
		files := map[string]bool{}
		for _, hb := range st.Heartbeats[name] {
			for _, f := range hb.Files {
				files[f.Key] = true
			}
		}
		r.Files = len(files)
		for _, a := range st.Assigns {
			if a.Topic == name {
				if a.State == protocol.StateRevoking {
					r.Pending++
				} else {
					r.Assigned++
				}
			}
		}
		switch {
		case e.Err != nil:
			r.State, r.Error = protocol.TopicInvalid, e.Err.Error()
		case e.Config.Paused:
			r.State = protocol.TopicPaused
		}
		if ts, ok := st.TopicStatus[name]; ok && ts.Error != "" && r.Error == "" {
			r.Error = ts.Error
		}
		out = append(out, r)
	}
	return out
}

// lagRow is one file's shipping progress.
type lagRow struct {
	Topic      string `json:"topic"`
	File       string `json:"file"`
	Path       string `json:"path"`
	Owner      string `json:"owner"`
	Size       int64  `json:"size"`
	Checkpoint int64  `json:"checkpoint"`
	Behind     int64  `json:"bytes_behind"`
	Updated    string `json:"updated,omitempty"`
}

func (st *state) lagRows(topic string) []lagRow {
	var out []lagRow
	seen := map[string]bool{}
	for _, a := range st.Assigns {
		if topic != "" && a.Topic != topic {
			continue
		}
		seen[a.Topic+"/"+a.File] = true
		r := lagRow{Topic: a.Topic, File: a.File, Path: a.Path, Owner: a.Agent}
		if cp, ok := st.Offsets[a.Topic+"/"+a.File]; ok {
			r.Size, r.Checkpoint, r.Updated = cp.Size, cp.Offset, cp.Updated.Format(time.RFC3339)
		}
		r.Behind = max(0, r.Size-r.Checkpoint)
		out = append(out, r)
	}
	// Checkpointed files nobody holds now (finished, or waiting for an owner).
	for _, k := range slices.Sorted(maps.Keys(st.Offsets)) {
		cp := st.Offsets[k]
		t, f, _ := strings.Cut(k, "/")
		if seen[k] || (topic != "" && t != topic) {
			continue
		}
		out = append(out, lagRow{Topic: t, File: f, Path: cp.Path, Owner: "-", Size: cp.Size, Checkpoint: cp.Offset,
			Behind: max(0, cp.Size-cp.Offset), Updated: cp.Updated.Format(time.RFC3339)})
	}
	return out
}

func newStatusCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the leader, the agents with their topics and files, and topics with errors",
		Args:  exactArgs(0, ""),
		RunE: func(_ *cobra.Command, _ []string) error {
			return a.withState(func(st *state) error {
				out := struct {
					Revision    int64                       `json:"revision"`
					Leader      string                      `json:"leader"`
					Coordinator *protocol.CoordinatorStatus `json:"coordinator,omitempty"`
					Agents      []agentRow                  `json:"agents"`
					Topics      []topicRow                  `json:"topics"`
					JunkKeys    []string                    `json:"junk_keys,omitempty"`
				}{st.Revision, st.Leader, st.Coordinator, st.agentRows(), st.topicRows(), st.Junk}
				if a.output == "json" {
					return writeJSON(a.stdout, out)
				}
				leader := out.Leader
				if leader == "" {
					leader = "none (no coordinator is running)"
				}
				fmt.Fprintf(a.stdout, "leader: %s\n", leader)
				if c := st.Coordinator; c != nil {
					fmt.Fprintf(a.stdout, "last reconcile: %s (%.3fs), %d members, %d files, %d assignments, %d pending handovers\n",
						c.LastReconcile.Format(time.RFC3339), c.LastReconcileSeconds, c.Members, c.Files, c.Assignments, c.PendingHandovers)
				}
				fmt.Fprintln(a.stdout)
				writeAgents(a.stdout, out.Agents)
				fmt.Fprintln(a.stdout)
				writeTopics(a.stdout, out.Topics)
				for _, j := range st.Junk {
					fmt.Fprintf(a.stdout, "junk key (ignored): %s\n", j)
				}
				return nil
			})
		},
	}
}

func writeAgents(w io.Writer, rows []agentRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tVERSION\tTOPICS\tFILES SEEN\tASSIGNED\tPROBLEMS\tLOST BYTES")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\n", r.Agent, r.Version, strings.Join(r.Topics, ","), r.FilesSeen,
			r.Assigned, r.Problems, r.LostBytes)
	}
	tw.Flush()
}

func writeTopics(w io.Writer, rows []topicRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tSTATE\tSHARED\tMEMBERS\tFILES\tASSIGNED\tPENDING\tERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%t\t%d\t%d\t%d\t%d\t%s\n", r.Topic, r.State, r.Shared, r.Members, r.Files, r.Assigned, r.Pending, r.Error)
	}
	tw.Flush()
}

func newAgentsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "agents",
		Short: "List live agents: topics served, files seen and assigned, problems",
		Args:  exactArgs(0, ""),
		RunE: func(_ *cobra.Command, _ []string) error {
			return a.withState(func(st *state) error {
				rows := st.agentRows()
				if a.output == "json" {
					type withProblems struct {
						agentRow
						Details []protocol.Problem `json:"details"`
					}
					out := []withProblems{}
					for _, r := range rows {
						out = append(out, withProblems{r, st.Agents[r.Agent].Problems})
					}
					return writeJSON(a.stdout, out)
				}
				writeAgents(a.stdout, rows)
				for _, r := range rows {
					for _, p := range st.Agents[r.Agent].Problems {
						fmt.Fprintf(a.stdout, "%s: %s %s %s: %s\n", r.Agent, p.Kind, p.Topic, p.Path, p.Error)
					}
					if n := st.Agents[r.Agent].Unlisted; n > 0 {
						fmt.Fprintf(a.stdout, "%s: %d more problems not listed (see the agent's log)\n", r.Agent, n)
					}
				}
				return nil
			})
		},
	}
}

func newAssignmentsCmd(a *app) *cobra.Command {
	var topic string
	cmd := &cobra.Command{
		Use:   "assignments [--topic P]",
		Short: "List which agent ships which file",
		Args:  exactArgs(0, ""),
		RunE: func(_ *cobra.Command, _ []string) error {
			return a.withState(func(st *state) error {
				rows := []assignRow{}
				for _, r := range st.Assigns {
					if topic == "" || r.Topic == topic {
						rows = append(rows, r)
					}
				}
				if a.output == "json" {
					return writeJSON(a.stdout, rows)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TOPIC\tAGENT\tSTATE\tPATH\tFILE")
				for _, r := range rows {
					state := r.State
					if r.Next != "" {
						state += " -> " + r.Next
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Topic, r.Agent, state, r.Path, r.File)
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "only this topic directory")
	return cmd
}

func newLagCmd(a *app) *cobra.Command {
	var topic string
	cmd := &cobra.Command{
		Use:   "lag [--topic P]",
		Short: "Per file: size, checkpoint, bytes behind, owner",
		Long: `Per file: the size the owner last saw, the checkpoint (bytes Kafka acknowledged),
the difference, and the owner. Sizes come from the owners' checkpoints, which
are rewritten when a file grows even if nothing was acknowledged, so a stuck
file shows a growing lag here.`,
		Args: exactArgs(0, ""),
		RunE: func(_ *cobra.Command, _ []string) error {
			return a.withState(func(st *state) error {
				rows := st.lagRows(topic)
				if a.output == "json" {
					if rows == nil {
						rows = []lagRow{}
					}
					return writeJSON(a.stdout, rows)
				}
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
				fmt.Fprintln(tw, "TOPIC\tOWNER\tSIZE\tCHECKPOINT\tBEHIND\tPATH\t")
				var total int64
				for _, r := range rows {
					total += r.Behind
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t\n", r.Topic, r.Owner, r.Size, r.Checkpoint, r.Behind, r.Path)
				}
				fmt.Fprintf(tw, "total\t\t\t\t%d\t\t\n", total)
				return tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "only this topic directory")
	return cmd
}
