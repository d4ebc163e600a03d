package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			http.Error(w, `{"waiting":["nats"]}`, http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	for _, tc := range []struct {
		args     []string
		code     int
		stderrIn string
	}{
		{[]string{"http", srv.URL + "/healthz"}, 0, ""},
		{[]string{"http", srv.URL + "/readyz"}, 1, `503 Service Unavailable: {"waiting":["nats"]}`},
		{[]string{"http", "http://" + closedAddr(t) + "/healthz"}, 1, "connection refused"},
		{[]string{"http", "://bad"}, 2, "usage"},
	} {
		code, stderr := probeArgs(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.stderrIn) {
			t.Errorf("cosprobe %q = %d, stderr %q; want %d with %q", tc.args, code, stderr, tc.code, tc.stderrIn)
		}
	}
}

func TestGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer() // "" is SERVING from the start
	hs.SetServingStatus("ready.Service", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("draining.Service", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	addr := lis.Addr().String()

	for _, tc := range []struct {
		args     []string
		code     int
		stderrIn string
	}{
		{[]string{"grpc", addr}, 0, ""},
		{[]string{"-timeout", "5s", "grpc", addr, "ready.Service"}, 0, ""},
		{[]string{"grpc", addr, "draining.Service"}, 1, "NOT_SERVING"},
		{[]string{"grpc", addr, "unknown.Service"}, 1, "NotFound"},
		{[]string{"grpc", closedAddr(t)}, 1, "Unavailable"},
	} {
		code, stderr := probeArgs(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.stderrIn) {
			t.Errorf("cosprobe %q = %d, stderr %q; want %d with %q", tc.args, code, stderr, tc.code, tc.stderrIn)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"tcp", "127.0.0.1:1"},
		{"http"},
		{"grpc", "a:1", "svc", "extra"},
		{"-timeout", "0s", "http", "http://127.0.0.1:1/"},
		{"-nope"},
	} {
		if code, stderr := probeArgs(t, args...); code != 2 || !strings.Contains(stderr, "usage: cosprobe") {
			t.Errorf("cosprobe %q = %d, stderr %q; want 2 with the usage text", args, code, stderr)
		}
	}
}

func probeArgs(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	code := run(context.Background(), args, &stderr)
	return code, stderr.String()
}

// closedAddr is a loopback address nothing listens on: a port just released.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}
