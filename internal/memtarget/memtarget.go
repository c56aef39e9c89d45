package memtarget

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Config configures Run.
type Config struct {
	// Target is the memory the process aims at, in bytes (the Go
	// runtime's count: heap, stacks and its own structures; RSS also
	// holds the binary's pages). 0 turns Run off.
	Target int64
	// Every is how often the live heap is read and the limit set (default
	// 1 s: a burst that outgrows the limit makes the collector busy for
	// at most that long).
	Every  time.Duration
	Logger *slog.Logger
}

// headroom is the share of the live heap the limit leaves above it, at
// least: the collector then runs at most after every quarter of the live
// heap allocated, as with GOGC=25.
const headroom = 0.25

// Run steers the soft memory limit until ctx is done, then puts back the
// limit it found. It returns nil.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Target <= 0 {
		return nil
	}
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("GOMEMLIMIT is set; the memory target is not used", "gomemlimit", v)
		return nil
	}
	every := cfg.Every
	if every <= 0 {
		every = time.Second
	}
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	samples := newSamples()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		debug.SetMemoryLimit(Limit(cfg.Target, samples.read()))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Usage is what the runtime says of its memory, in bytes.
type Usage struct {
	Live    int64 // the live heap, as the last collection marked it
	NonHeap int64 // the runtime's memory outside the heap: stacks, its structures
}

// Limit is the soft memory limit for target and u: the target, or more
// when the live heap needs it.
func Limit(target int64, u Usage) int64 {
	need := u.NonHeap + u.Live + int64(math.Ceil(float64(u.Live)*headroom))
	return max(target, need)
}

// samples reads Usage from runtime/metrics.
type samples struct{ s []metrics.Sample }

var names = []string{
	"/gc/heap/live:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
}

func newSamples() *samples {
	s := &samples{s: make([]metrics.Sample, len(names))}
	for i, n := range names {
		s.s[i].Name = n
	}
	return s
}

func (s *samples) read() Usage {
	metrics.Read(s.s)
	v := func(i int) int64 {
		if s.s[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return int64(s.s[i].Value.Uint64())
	}
	return Usage{Live: v(0), NonHeap: max(0, v(1)-v(2)-v(3)-v(4)-v(5))}
}

// ErrSize marks a size ParseSize cannot read.
var ErrSize = errors.New("want a size such as 48MiB or 1GiB (a number of bytes, or with B, KiB, MiB, GiB or TiB), or 0")

// ParseSize reads a size in GOMEMLIMIT's units: a number of bytes, or a
// number (a fraction too: 1.5GiB) with the suffix B, KiB, MiB, GiB or
// TiB. A size under one byte other than 0 is refused, not read as 0
// (which turns a target off).
func ParseSize(v string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}
	num, mult := v, 1.0
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			num, mult = strings.TrimSuffix(v, u.suffix), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*mult >= math.MaxInt64 || (f > 0 && f*mult < 1) {
		return 0, ErrSize
	}
	return int64(f * mult), nil
}
