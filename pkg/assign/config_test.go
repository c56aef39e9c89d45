package assign

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"zero value selects defaults", Config{}, ""},
		{"explicit values", Config{Epsilon: 0.1, PartitionCount: 1031, ReplicationFactor: 5}, ""},
		{"largest epsilon", Config{Epsilon: 100}, ""},
		{"negative epsilon", Config{Epsilon: -0.5}, "Epsilon -0.5"},
		{"NaN epsilon", Config{Epsilon: math.NaN()}, "Epsilon NaN"},
		{"infinite epsilon", Config{Epsilon: math.Inf(1)}, "Epsilon +Inf"},
		{"epsilon too large", Config{Epsilon: 101}, "Epsilon 101"},
		{"negative partitions", Config{PartitionCount: -1}, "PartitionCount -1"},
		{"too many partitions", Config{PartitionCount: 1 << 25}, "PartitionCount 33554432"},
		{"negative replication", Config{ReplicationFactor: -3}, "ReplicationFactor -3"},
		{"replication too large", Config{ReplicationFactor: 5000}, "ReplicationFactor 5000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, newErr := NewAssigner(tc.cfg)
			_, computeErr := Compute(tc.cfg, Input{})
			if tc.wantErr == "" {
				require.NoError(t, err, "Validate of a valid config")
				require.NoError(t, newErr, "NewAssigner of a valid config")
				require.NoError(t, computeErr, "Compute with a valid config")
				return
			}
			for _, e := range []error{err, newErr, computeErr} {
				require.ErrorIs(t, e, ErrInvalidConfig, "every entry point rejects the config")
				require.ErrorContains(t, e, tc.wantErr, "the error names the bad value")
				require.ErrorContains(t, e, "assign: ", "errors carry the package prefix")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	got := Config{}.withDefaults()
	require.Equal(t, Config{Epsilon: 0.25, PartitionCount: 271, ReplicationFactor: 20}, got,
		"zero fields must take the documented defaults (consistent's for the ring)")
	set := Config{Epsilon: 0.5, PartitionCount: 7, ReplicationFactor: 3}
	require.Equal(t, set, set.withDefaults(), "set fields must be kept")
}

func TestCapacity(t *testing.T) {
	tests := []struct {
		name           string
		files, members int
		eps            float64
		want           int
	}{
		{"no files", 0, 5, 0.25, 0},
		{"no members", 10, 0, 0.25, 0},
		{"exact", 8, 4, 0.25, 3},      // 1.25*2 = 2.5
		{"one member", 3, 1, 0.25, 4}, // 3.75
		{"fewer files than members", 5, 10, 0.25, 1},
		{"eps 0.1 is exactly a tenth", 10, 1, 0.1, 11}, // float64(1.1)*10 would round up to 12
		{"tiny eps is ceil(avg)", 10, 3, 1e-9, 4},
		{"never below ceil(avg)", 1, 3, 1e-9, 1},
		{"eps 1 doubles", 1000, 10, 1, 200},
		{"large", 1_000_000, 10_000, 0.25, 125},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, capacity(tc.files, tc.members, tc.eps),
				"capacity(%d files, %d members, eps %v)", tc.files, tc.members, tc.eps)
		})
	}
	t.Run("matches integer formula for eps 0.25", func(t *testing.T) {
		for n := 0; n <= 300; n++ {
			for m := 1; m <= 40; m++ {
				want := 0
				if n > 0 {
					want = (5*n + 4*m - 1) / (4 * m)
				}
				require.Equal(t, want, capacity(n, m, 0.25), "capacity(%d files, %d members)", n, m)
			}
		}
	})
}

func TestHasher(t *testing.T) {
	for _, s := range []string{"", "a", "agent-00001", "/var/log/app/0000001.log", "ü\x00\xff"} {
		require.Equal(t, hasher{}.Sum64([]byte(s)), hashString(s), "string and byte hashes of %q must agree", s)
	}
	// Pinned values: a change here changes every ring, so it must be
	// deliberate and rolled out to all coordinators at once.
	require.Equal(t, fmix64(fnvOffset64), hashString(""), "empty input hashes to the mixed FNV offset")
	require.NotEqual(t, hashString("0:a"), hashString("1:a"), "virtual node keys must differ")
}
