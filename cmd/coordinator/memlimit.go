package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/logferry/logferry/internal/memtarget"
)

// memoryLimitAuto is --memory-limit's default.
const memoryLimitAuto = "auto"

// autoLimitShare is the share of the cgroup's memory limit that "auto" sets
// as the soft limit: the collector works harder as the heap nears it,
// leaving the rest for what the Go runtime does not count (stacks, the
// binary, fragmentation) before the kernel's hard limit kills the process.
const autoLimitShare = 0.9

// memoryLimit is what --memory-limit asks of runtime/debug.SetMemoryLimit.
type memoryLimit struct {
	bytes int64  // 0: no limit set by the flag
	why   string // for the log
}

// resolveMemoryLimit turns the flag's value into a limit. "auto" defers to
// GOMEMLIMIT when the environment sets it, else takes autoLimitShare of the
// cgroup's memory limit (systemd's MemoryMax=, a container's limit), else
// sets none; "0" sets none; anything else is a size: bytes, or a number
// with a unit of B, KiB, MiB, GiB or TiB, as GOMEMLIMIT is written.
func resolveMemoryLimit(v string, getenv func(string) string, cgroup func() (int64, bool)) (memoryLimit, error) {
	if v != memoryLimitAuto {
		n, err := memtarget.ParseSize(v)
		if err != nil {
			return memoryLimit{}, fmt.Errorf("--memory-limit %q: %w", v, errSize)
		}
		if n == 0 {
			return memoryLimit{why: "off (--memory-limit 0)"}, nil
		}
		return memoryLimit{bytes: n, why: "--memory-limit"}, nil
	}
	if env := getenv("GOMEMLIMIT"); env != "" {
		return memoryLimit{why: "GOMEMLIMIT=" + env + " (the runtime's own)"}, nil
	}
	if lim, ok := cgroup(); ok {
		return memoryLimit{bytes: int64(float64(lim) * autoLimitShare), why: fmt.Sprintf("%.0f%% of the cgroup's limit of %d bytes", autoLimitShare*100, lim)}, nil
	}
	return memoryLimit{why: "off (auto: no GOMEMLIMIT and no cgroup memory limit)"}, nil
}

var errSize = errors.New("want auto, 0, or a size such as 900MiB or 1GiB")

// cgroupMemoryLimit returns the memory limit of this process's cgroup (v2
// memory.max, or v1 memory.limit_in_bytes), if it has one.
func cgroupMemoryLimit() (int64, bool) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			file = filepath.Join("/sys/fs/cgroup", parts[2], "memory.max")
		case strings.Contains(","+parts[1]+",", ",memory,"):
			file = filepath.Join("/sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes")
		default:
			continue
		}
		if lim, ok := readLimit(file); ok {
			return lim, true
		}
	}
	return 0, false
}

// readLimit reads a cgroup limit file; "max" and v1's huge "unlimited"
// value are no limit.
func readLimit(file string) (int64, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0, false
	}
	return n, true
}
