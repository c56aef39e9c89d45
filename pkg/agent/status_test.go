package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logferry/logferry/pkg/protocol"
)

// Thousands of unreadable files must not make the status value too large
// for etcd (it would then never be written): the list is capped, sorted,
// and says how many it left out.
func TestStatusListsAtMostMaxProblems(t *testing.T) {
	var ps []protocol.Problem
	for i := range 5000 {
		ps = append(ps, protocol.Problem{Topic: "t", Path: fmt.Sprintf("/var/log/app/%05d.log", 4999-i), Kind: "unreadable",
			Error: strings.Repeat("permission denied ", 10)})
	}
	ps = append(ps, protocol.Problem{Topic: "t", Kind: "topic-refused", Error: "outside the roots"})
	listed, unlisted := listProblems(ps, maxListedProblems)
	require.Len(t, listed, maxListedProblems)
	require.Equal(t, 5001-maxListedProblems, unlisted)
	require.Equal(t, "topic-refused", listed[0].Kind, "topic-wide problems first")
	require.Equal(t, "/var/log/app/00000.log", listed[1].Path)
	data, err := protocol.Marshal(&protocol.AgentStatus{Agent: "h1", Problems: listed, Unlisted: unlisted})
	require.NoError(t, err)
	require.Less(t, len(data), 1<<20, "well within etcd's default request limit")
	few, none := listProblems(ps[:3], maxListedProblems)
	require.Len(t, few, 3)
	require.Zero(t, none)
}
