package opsserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
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
	require.NoError(t, s.Listen())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	base := "http://" + s.Addr()

	code, body := get(t, base+"/healthz")
	require.Equal(t, 200, code)
	require.Equal(t, "ok\n", body)
	code, body = get(t, base+"/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "lease not held")
	ready.Store(true)
	code, _ = get(t, base+"/readyz")
	require.Equal(t, 200, code)
	code, body = get(t, base+"/metrics")
	require.Equal(t, 200, code)
	require.Contains(t, body, "test_things_total 3")

	http.DefaultClient.CloseIdleConnections()
	cancel()
	require.NoError(t, <-done)
}

func TestBadListen(t *testing.T) {
	s := New("not-an-address", prometheus.NewRegistry(), func() error { return nil }, slog.New(slog.DiscardHandler))
	require.ErrorContains(t, s.Listen(), "not-an-address")
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		s := New("127.0.0.1:0", prometheus.NewRegistry(), func() error { return nil }, slog.New(slog.DiscardHandler))
		if enabled {
			s.EnablePprof()
		}
		require.NoError(t, s.Listen())
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		code, body := get(t, "http://"+s.Addr()+"/debug/pprof/goroutine?debug=1")
		if enabled {
			require.Equal(t, 200, code)
			require.Contains(t, body, "goroutine profile")
		} else {
			require.Equal(t, 404, code)
		}
		http.DefaultClient.CloseIdleConnections()
		cancel()
		require.NoError(t, <-done)
	}
}
