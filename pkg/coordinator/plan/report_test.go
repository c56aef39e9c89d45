package plan

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestForEachDistinctVisitsTheUnionInOrder(t *testing.T) {
	for _, c := range []struct {
		name  string
		lists [][]string
		want  []string
	}{
		{"none", nil, nil},
		{"empty lists", [][]string{{}, nil}, nil},
		{"one", [][]string{{"a", "b"}}, []string{"a", "b"}},
		{"overlapping", [][]string{{"b", "d"}, {"a", "b", "c"}, {"d"}, {"b"}}, []string{"a", "b", "c", "d"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			forEachDistinct(c.lists, func(f string) { got = append(got, f) })
			require.Equal(t, c.want, got)
		})
	}
	// Random lists against a set.
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		set := map[string]bool{}
		var lists [][]string
		for range r.IntN(20) {
			var l []string
			for range r.IntN(30) {
				f := string(rune('a' + r.IntN(26)))
				l = append(l, f)
				set[f] = true
			}
			slices.Sort(l)
			lists = append(lists, slices.Compact(l))
		}
		var got []string
		forEachDistinct(lists, func(f string) { got = append(got, f) })
		require.Equal(t, slices.Sorted(maps.Keys(set)), append([]string(nil), got...))
	}
}
