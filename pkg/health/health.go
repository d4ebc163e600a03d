// Package health tracks whether a process can do its work — NATS connected, streams and consumers
// bound, roles running — and reports it to orchestrators: /healthz and /readyz over HTTP, and the
// gRPC health service of the gateway. A process that waits for NATS stays alive and says why it is
// not ready instead of exiting.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// State is the readiness of one process: the conjunction of named conditions. Each part of the process
// registers its condition with Add and reports on it; the process is ready when every condition holds.
type State struct {
	mu        sync.Mutex
	conds     map[string]string // name → why it does not hold ("" = holds)
	ready     bool
	listeners []func(ready bool)
}

// New returns a State with no conditions: ready until a condition is added.
func New() *State { return &State{conds: map[string]string{}, ready: true} }

// Condition is one named part of readiness.
type Condition struct {
	s    *State
	name string
}

// Add registers a condition that does not hold yet, for the given reason.
func (s *State) Add(name, reason string) *Condition {
	s.mu.Lock()
	s.conds[name] = reason
	s.mu.Unlock()
	s.changed()
	return &Condition{s: s, name: name}
}

// OK marks the condition as holding.
func (c *Condition) OK() { c.set("") }

// Fail marks the condition as not holding, with the reason operators see in /readyz.
func (c *Condition) Fail(reason string) {
	if reason == "" {
		reason = "not ready"
	}
	c.set(reason)
}

func (c *Condition) set(reason string) {
	c.s.mu.Lock()
	c.s.conds[c.name] = reason
	c.s.mu.Unlock()
	c.s.changed()
}

// OnChange calls fn with the readiness now and after every change of it. fn must not block.
func (s *State) OnChange(fn func(ready bool)) {
	s.mu.Lock()
	s.listeners = append(s.listeners, fn)
	ready := s.ready
	s.mu.Unlock()
	fn(ready)
}

func (s *State) changed() {
	s.mu.Lock()
	ready := true
	for _, why := range s.conds {
		if why != "" {
			ready = false
		}
	}
	flipped := ready != s.ready
	s.ready = ready
	ls := append([]func(bool){}, s.listeners...)
	s.mu.Unlock()
	if flipped {
		for _, fn := range ls {
			fn(ready)
		}
	}
}

// Ready reports whether every condition holds and, if not, why not (sorted by condition name).
func (s *State) Ready() (bool, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var why []string
	for name, reason := range s.conds {
		if reason != "" {
			why = append(why, name+": "+reason)
		}
	}
	sort.Strings(why)
	return len(why) == 0, why
}

// report is the body of /readyz.
type report struct {
	Ready   bool     `json:"ready"`
	Waiting []string `json:"waiting,omitempty"`
}

// Handler serves /healthz (200 while the process runs) and /readyz (200 when ready, else 503 with
// the conditions that do not hold).
func Handler(s *State) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ready, why := s.Ready()
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(report{Ready: ready, Waiting: why})
	})
	return mux
}

// Server is the HTTP listener for the probes. Create with Listen, run with Serve.
type Server struct {
	lis net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds addr (host:port; port 0 picks one).
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (COS_METRICS_ADDRESS): %w", addr, err)
	}
	return &Server{lis: lis, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, log: log}, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until ctx ends. The probes keep answering during a graceful shutdown, so it stops only
// when the process is done.
func (s *Server) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		_ = s.srv.Close()
	}()
	s.log.Info("serving /metrics, /healthz and /readyz", "addr", s.Addr())
	if err := s.srv.Serve(s.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("probe listener: %w", err)
	}
	return nil
}
