// Package opsserver serves a daemon's operational endpoints on --listen:
// /metrics (Prometheus), /healthz (liveness: the process serves) and
// /readyz (readiness: the daemon's own check). Liveness and readiness are
// separate on purpose: a daemon waiting for etcd is alive but not ready, and
// restarting it would not help.
package opsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server is the ops HTTP server. Construct with New, drive with Run.
type Server struct {
	addr  string
	ready func() error
	log   *slog.Logger
	mux   *http.ServeMux
	ln    net.Listener
}

// New prepares a server on addr. ready returns nil when the daemon is ready,
// or an error saying why not. It listens only when Run is called, unless
// Listen is called first (tests use ":0" and Addr).
func New(addr string, gatherer prometheus.Gatherer, ready func() error, log *slog.Logger) *Server {
	s := &Server{addr: addr, ready: ready, log: log.With("component", "opsserver"), mux: http.NewServeMux()}
	s.mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := s.ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return s
}

// EnablePprof serves the runtime profiles under /debug/pprof/ (CPU, heap,
// goroutines, ...). Off by default: a CPU profile costs the daemon while it
// runs, and the endpoints reveal internals, so operators turn it on for a
// diagnosis (--pprof), not for good.
func (s *Server) EnablePprof() {
	s.mux.HandleFunc("/debug/pprof/", pprof.Index)
	s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// Listen binds the address now, so a bad --listen fails at start-up.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", s.addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen or Run started).
func (s *Server) Addr() string {
	if s.ln == nil {
		return s.addr
	}
	return s.ln.Addr().String()
}

// Run serves until ctx is done, then shuts down within 2 s.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(s.ln) }()
	s.log.Info("serving /metrics, /healthz, /readyz", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("ops server on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	<-errc
	return nil
}
