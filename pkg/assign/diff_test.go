package assign

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDiff(t *testing.T) {
	tests := []struct {
		name             string
		current, desired map[string]string
		want             []Move
	}{
		{"both empty", nil, nil, nil},
		{"identical", map[string]string{"f": "a"}, map[string]string{"f": "a"}, nil},
		{"new file", nil, map[string]string{"f": "a"}, []Move{{"f", "", "a"}}},
		{"unassigned", map[string]string{"f": "a"}, nil, []Move{{"f", "a", ""}}},
		{"moved", map[string]string{"f": "a"}, map[string]string{"f": "b"}, []Move{{"f", "a", "b"}}},
		{"empty value is unassigned", map[string]string{"f": "", "g": ""}, map[string]string{"g": "b"}, []Move{{"g", "", "b"}}},
		{"sorted by file", map[string]string{"c": "a", "a": "a", "b": "x"}, map[string]string{"c": "b", "a": "b", "d": "d", "b": "x"},
			[]Move{{"a", "a", "b"}, {"c", "a", "b"}, {"d", "", "d"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, Diff(tc.current, tc.desired), "moves from %v to %v", tc.current, tc.desired)
		})
	}
}
