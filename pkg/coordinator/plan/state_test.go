package plan

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// Holders keep one key per agent, in agent order, through adds, replaces
// and removals in any order.
func TestHoldersChain(t *testing.T) {
	var h Holders
	key := func(agent string, rev int64) *Assignment { return &Assignment{Agent: agent, CreateRev: rev} }
	revs := func(h Holders) map[string]int64 {
		out := map[string]int64{}
		for a := range h.All() {
			out[a.Agent] = a.CreateRev
		}
		return out
	}
	require.Zero(t, h.Len())
	require.Nil(t, h.get("a"))
	h = h.with(key("c", 1))
	h = h.with(key("a", 2))
	h = h.with(key("b", 3))
	require.Equal(t, []string{"a", "b", "c"}, h.agents())
	h = h.with(key("b", 4)) // replaces b's key in place
	h = h.with(key("a", 5))
	h = h.with(key("c", 6))
	require.Equal(t, []string{"a", "b", "c"}, h.agents())
	require.Equal(t, map[string]int64{"a": 5, "b": 4, "c": 6}, revs(h))
	require.Equal(t, int64(4), h.get("b").CreateRev)
	h = h.without("b")
	require.Equal(t, []string{"a", "c"}, h.agents())
	h = h.without("zz") // not there
	h = h.without("a")
	require.Equal(t, []string{"c"}, h.agents())
	require.Equal(t, 1, h.Len())
	h = h.without("c")
	require.Nil(t, h.head)
	require.Zero(t, h.Len())
}

// One Assignment per file at a million files: its size is the leader's
// memory (BenchmarkStateMemory has the whole figure).
func TestAssignmentSize(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(Assignment{}), uintptr(96))
}
