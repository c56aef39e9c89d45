// Package procstat reads what Linux's /proc says of a process: its CPU
// time (/proc/<pid>/stat) and the fields of its status (/proc/<pid>/status),
// for the benchmarks and the fleet simulator that measure the real
// binaries.
//
// Invariants:
//   - Every error names the file and the field it could not read; a field
//     missing from the file is an error, never a zero.
//   - Only reads: nothing here writes or signals a process.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 a
// second on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// CPU is pid's user plus system CPU time so far (fields 14 and 15 of
// /proc/<pid>/stat, counted after the command name, which may itself hold
// spaces and parentheses), to a clock tick of 10 ms.
func CPU(pid int) (time.Duration, error) {
	name := fmt.Sprintf("/proc/%d/stat", pid)
	data, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name in %q", name, data)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state): utime is field 14, stime field 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("%s: %d fields after the name, want at least 13", name, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%s: utime %q, stime %q", name, fields[11], fields[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// Status reads the named fields of /proc/<pid>/status as numbers: sizes
// ("VmRSS:  1234 kB") in bytes, counts ("Threads:  9") as they are.
func Status(pid int, names ...string) (map[string]int64, error) {
	file := fmt.Sprintf("/proc/%d/status", pid)
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(names))
	for line := range strings.Lines(string(data)) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		want := false
		for _, n := range names {
			want = want || n == name
		}
		if !want {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "kB") {
			return nil, fmt.Errorf("%s: %s is %q", file, name, strings.TrimSpace(rest))
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %s is %q", file, name, strings.TrimSpace(rest))
		}
		if len(f) == 2 {
			v <<= 10
		}
		out[name] = v
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s: no %s", file, n)
		}
	}
	return out, nil
}
