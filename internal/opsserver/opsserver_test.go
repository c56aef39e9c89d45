package opsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/logferry/logferry/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// get fetches without keeping the connection alive (goleak would see it).
var get = testenv.HTTPGet

// serve runs s until the test ends and returns its base URL.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	require.NoError(t, s.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return "http://" + s.Addr()
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_things_total", Help: "things"})
	reg.MustRegister(c)
	c.Add(3)
	var ready atomic.Bool
	s := New("127.0.0.1:0", reg, func() error {
		if !ready.Load() {
			return errors.New("lease not held")
		}
		return nil
	}, slog.New(slog.DiscardHandler))
	base := serve(t, s)

	code, body := get(base + "/healthz")
	require.Equal(t, 200, code)
	require.Equal(t, "ok\n", body)
	code, body = get(base + "/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "lease not held")
	ready.Store(true)
	code, _ = get(base + "/readyz")
	require.Equal(t, 200, code)
	code, body = get(base + "/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "test_things_total 3")
}

func TestBadListen(t *testing.T) {
	s := New("not-an-address", prometheus.NewRegistry(), func() error { return nil }, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, s.Listen(), "not-an-address")
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint("enabled=", enabled), func(t *testing.T) {
			s := New("127.0.0.1:0", prometheus.NewRegistry(), func() error { return nil }, slog.New(slog.DiscardHandler))
			if enabled {
				s.EnablePprof()
			}
			code, body := get(serve(t, s) + "/debug/pprof/goroutine?debug=1")
			if enabled {
				require.Equal(t, 200, code)
				require.Contains(t, body, "goroutine profile")
			} else {
				require.Equal(t, 404, code)
			}
		})
	}
}
