package natsembed_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/natsembed"
)

// jetStream wraps nc in a JetStream handle and closes nc when the test ends.
func jetStream(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// dial connects to url over TCP and returns a JetStream handle.
func dial(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	return jetStream(t, nc)
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestStartRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]natsembed.Config{
		"no store dir":  {},
		"no port":       {StoreDir: t.TempDir(), Listen: "127.0.0.1"},
		"bad port":      {StoreDir: t.TempDir(), Listen: "127.0.0.1:http"},
		"empty address": {StoreDir: t.TempDir(), Listen: ":"},
	} {
		t.Run(name, func(t *testing.T) {
			srv, err := natsembed.Start(cfg)
			if err == nil {
				srv.Shutdown()
				t.Fatalf("Start(%+v) succeeded, want an error", cfg)
			}
		})
	}
}

// An in-process server has no client URL but accepts in-process connections with JetStream; its data
// survives a restart on the same store directory, this time listening on a random loopback port.
func TestStartInProcessThenListening(t *testing.T) {
	dir := t.TempDir()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: dir, SyncAlways: true})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	if url := srv.ClientURL(); url != "" {
		t.Fatalf("in-process server has client URL %q, want none", url)
	}
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	js := jetStream(t, nc)
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx(t), "s.1", []byte("one")); err != nil {
		t.Fatalf("publish: %v", err)
	}
	nc.Close()
	srv.Shutdown()

	srv, err = natsembed.Start(natsembed.Config{StoreDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	url := srv.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") || strings.HasSuffix(url, ":4222") {
		t.Fatalf("client URL %q, want a random port on 127.0.0.1", url)
	}
	js = dial(t, url)
	st, err := js.Stream(ctx(t), "S")
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Fatalf("stream has %d messages after restart, want 1", n)
	}
	msg, err := st.GetMsg(ctx(t), 1)
	if err != nil || string(msg.Data) != "one" {
		t.Fatalf("message 1: %v, %v", msg, err)
	}
}
