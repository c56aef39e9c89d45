package assign

import (
	"slices"
	"strings"
)

// Move is one change between two assignments. From is "" for a file that
// was unassigned, To is "" for a file that becomes unassigned.
type Move struct {
	File, From, To string
}

// Diff lists the files whose member differs between current and desired,
// sorted by file key. A file absent from a map, or mapped to "", is
// unassigned in it.
func Diff(current, desired map[string]string) []Move {
	var moves []Move
	for f, from := range current {
		if to := desired[f]; from != to {
			moves = append(moves, Move{File: f, From: from, To: to})
		}
	}
	for f, to := range desired {
		if _, ok := current[f]; !ok && to != "" {
			moves = append(moves, Move{File: f, From: "", To: to})
		}
	}
	slices.SortFunc(moves, func(a, b Move) int { return strings.Compare(a.File, b.File) })
	return moves
}
