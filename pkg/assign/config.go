package assign

import (
	"errors"
	"fmt"
	"math"

	"github.com/buraksezer/consistent"
)

// Defaults applied to the zero values of Config.
const (
	// DefaultEpsilon is the load slack of the file-level bound:
	// no member holds more than ceil((1+Epsilon) * files/members) files.
	DefaultEpsilon = 0.25
	// DefaultPartitionCount and DefaultReplicationFactor are consistent's
	// own defaults, so a zero Config builds the ring consistent would build.
	DefaultPartitionCount    = consistent.DefaultPartitionCount
	DefaultReplicationFactor = consistent.DefaultReplicationFactor
)

// Limits that keep a mistyped value from turning into an out-of-memory kill
// or an integer overflow (the bound is computed in int64, see capacity).
const (
	maxEpsilon           = 100
	maxPartitionCount    = 1 << 24
	maxReplicationFactor = 1 << 10
	// epsilonScale: Epsilon is used with six decimal digits, so that 0.1
	// means 1/10 and not the float64 nearest to it (whose exact product
	// with 10 files is 11.000000000000002, i.e. a bound of 12).
	epsilonScale = 1_000_000
)

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("assign: invalid config")

// ErrTooManyFiles is returned when the input holds more files than the
// package indexes (2^31-1), which no real topic reaches.
var ErrTooManyFiles = errors.New("assign: too many files")

// Config tunes the assignment of shared topics. The zero value is valid.
//
// Every coordinator of a cluster must run with the same Config (and the same
// build of this package and of consistent): the ring, hence the assignment,
// depends on all three fields.
type Config struct {
	// Epsilon is the slack of the bound on files per member; 0 means
	// DefaultEpsilon. Must be in (0, 100]; six decimal digits are used.
	Epsilon float64
	// PartitionCount is the number of consistent partitions; 0 means
	// DefaultPartitionCount. With more members than partitions most members
	// own no partition and get files only by the ring walk (see doc.go);
	// raising it is safe at any time because assignments are sticky.
	PartitionCount int
	// ReplicationFactor is the number of virtual nodes per member on the
	// consistent ring; 0 means DefaultReplicationFactor. Building the ring
	// costs O(members^2 * ReplicationFactor) in consistent v1.0.0.
	ReplicationFactor int
}

// withDefaults returns c with zero fields replaced by the defaults.
func (c Config) withDefaults() Config {
	if c.Epsilon == 0 {
		c.Epsilon = DefaultEpsilon
	}
	if c.PartitionCount == 0 {
		c.PartitionCount = DefaultPartitionCount
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	return c
}

// Validate reports the first invalid field, naming it and its value.
// Zero fields are valid: they select the defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case math.IsNaN(c.Epsilon) || c.Epsilon < 0 || c.Epsilon > maxEpsilon:
		return fmt.Errorf("%w: Epsilon %v: must be in (0, %d] (0 selects %v)",
			ErrInvalidConfig, c.Epsilon, maxEpsilon, DefaultEpsilon)
	case c.PartitionCount < 0 || c.PartitionCount > maxPartitionCount:
		return fmt.Errorf("%w: PartitionCount %d: must be in [1, %d] (0 selects %d)",
			ErrInvalidConfig, c.PartitionCount, maxPartitionCount, DefaultPartitionCount)
	case c.ReplicationFactor < 0 || c.ReplicationFactor > maxReplicationFactor:
		return fmt.Errorf("%w: ReplicationFactor %d: must be in [1, %d] (0 selects %d)",
			ErrInvalidConfig, c.ReplicationFactor, maxReplicationFactor, DefaultReplicationFactor)
	}
	return nil
}

// capacity is the file-level bound ceil((1+eps) * files / members), computed
// exactly in integers from eps rounded to six decimals. It is never below
// ceil(files/members), so that the bound is always feasible when every
// member may take every file. Zero members or files give 0.
func capacity(files, members int, eps float64) int {
	if files <= 0 || members <= 0 {
		return 0
	}
	e := int64(math.Round(eps * epsilonScale))
	num := int64(files) * (epsilonScale + e) // <= 2^31 * 1.01e8 < 2^63
	den := int64(members) * epsilonScale
	c := int((num + den - 1) / den)
	if hi := (files + members - 1) / members; c < hi {
		c = hi
	}
	return c
}
