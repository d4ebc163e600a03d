package natsembed_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/natsembed"
)

func startCluster(t *testing.T, size int) *natsembed.Cluster {
	t.Helper()
	c, err := natsembed.StartCluster(natsembed.ClusterConfig{Size: size, StoreDir: t.TempDir(), SyncAlways: true})
	if err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

// localMessages is how many messages the streams stored on s hold.
func localMessages(s *server.Server) (uint64, error) {
	jsz, err := s.Jsz(nil)
	if err != nil {
		return 0, err
	}
	return jsz.Messages, nil
}

// publish publishes with a message ID, retrying until the deadline: after a server is killed, the stream
// may have to elect a new leader first. The ID makes a retried publish idempotent.
func publish(t *testing.T, js jetstream.JetStream, id string) *jetstream.PubAck {
	t.Helper()
	var ack *jetstream.PubAck
	waitFor(t, "publish "+id, func() error {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		ack, err = js.Publish(c, "test."+id, []byte(id), jetstream.WithMsgID(id))
		return err
	})
	return ack
}

func TestStartClusterRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]natsembed.ClusterConfig{
		"no servers":           {StoreDir: t.TempDir()},
		"negative size":        {Size: -1, StoreDir: t.TempDir()},
		"no store dir":         {Size: 3},
		"invalid name (space)": {Size: 3, StoreDir: t.TempDir(), Name: "a b"},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := natsembed.StartCluster(cfg)
			if err == nil {
				c.Shutdown()
				t.Fatalf("StartCluster(%+v) succeeded, want an error", cfg)
			}
		})
	}
}

// Three servers hold an R3 stream; with one of them (the stream leader) down the other two still form a
// quorum and accept writes; the restarted server catches up.
func TestClusterR3SurvivesOneServer(t *testing.T) {
	c := startCluster(t, 3)
	if c.Size() != 3 {
		t.Fatalf("Size %d, want 3", c.Size())
	}
	urls := c.ClientURLs()
	if c.URLList() != strings.Join(urls, ",") {
		t.Fatalf("URLList %q, ClientURLs %v", c.URLList(), urls)
	}
	names := make(map[string]int)
	for i, url := range urls {
		s := c.Server(i)
		if s == nil {
			t.Fatalf("server %d is not running", i)
		}
		if s.ClientURL() != url || c.ClientURL(i) != url {
			t.Fatalf("server %d listens on %s, ClientURL %s", i, s.ClientURL(), url)
		}
		names[s.Name()] = i
	}
	if _, ok := names["cos-0"]; !ok || len(names) != 3 {
		t.Fatalf("server names %v, want cos-0, cos-1, cos-2", names)
	}

	js := dial(t, c.URLList())
	st, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "TEST", Subjects: []string{"test.>"}, Replicas: 3})
	if err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	info := st.CachedInfo()
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != "cos" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream replicas %d, cluster %+v; want R3 in cluster cos", info.Config.Replicas, info.Cluster)
	}
	if ack := publish(t, js, "one"); ack.Sequence != 1 {
		t.Fatalf("first publish: sequence %d", ack.Sequence)
	}

	victim, ok := names[info.Cluster.Leader]
	if !ok {
		t.Fatalf("stream leader %q is none of %v", info.Cluster.Leader, names)
	}
	survivor := (victim + 1) % 3
	js = dial(t, c.ClientURL(survivor))
	if err := c.Kill(victim); err != nil {
		t.Fatalf("Kill(%d): %v", victim, err)
	}
	if c.Server(victim) != nil {
		t.Fatalf("server %d still reported after Kill", victim)
	}
	if err := c.Kill(victim); err == nil {
		t.Fatalf("second Kill(%d) succeeded", victim)
	}
	if err := c.Restart(survivor); err == nil {
		t.Fatalf("Restart of running server %d succeeded", survivor)
	}
	for _, i := range []int{-1, 3} {
		if err := c.Kill(i); err == nil {
			t.Fatalf("Kill(%d) succeeded", i)
		}
		if err := c.Restart(i); err == nil {
			t.Fatalf("Restart(%d) succeeded", i)
		}
	}

	if ack := publish(t, js, "two"); ack.Sequence != 2 {
		t.Fatalf("publish with server %d down: sequence %d, want 2", victim, ack.Sequence)
	}
	waitFor(t, "stream state with one server down", func() error {
		info, err := st.Info(ctx(t))
		if err != nil {
			return err
		}
		if info.State.Msgs != 2 || info.Cluster == nil || info.Cluster.Leader == "" || names[info.Cluster.Leader] == victim {
			return fmt.Errorf("%d messages, cluster %+v", info.State.Msgs, info.Cluster)
		}
		return nil
	})

	if err := c.Restart(victim); err != nil {
		t.Fatalf("Restart(%d): %v", victim, err)
	}
	s := c.Server(victim)
	if s == nil || s.ClientURL() != urls[victim] {
		t.Fatalf("restarted server %d: %v, want it listening on %s", victim, s, urls[victim])
	}
	js = dial(t, c.ClientURL(victim))
	if ack := publish(t, js, "three"); ack.Sequence != 3 {
		t.Fatalf("publish after restart: sequence %d, want 3", ack.Sequence)
	}
	for i := range c.Size() {
		waitFor(t, fmt.Sprintf("server %d catching up", i), func() error {
			n, err := localMessages(c.Server(i))
			if err == nil && n != 3 {
				err = fmt.Errorf("%d messages stored, want 3", n)
			}
			return err
		})
	}

	c.Shutdown()
	for i := range c.Size() {
		if c.Server(i) != nil {
			t.Fatalf("server %d still reported after Shutdown", i)
		}
	}
	if err := c.WaitReady(time.Minute); err == nil {
		t.Fatal("WaitReady succeeded with every server down")
	}
	c.Shutdown() // idempotent
}

// A one-server cluster is a valid cluster: it starts ready, and comes back after a restart.
func TestClusterOfOne(t *testing.T) {
	c := startCluster(t, 1)
	js := dial(t, c.ClientURL(0))
	if _, err := js.CreateStream(ctx(t), jetstream.StreamConfig{Name: "ONE", Subjects: []string{"test.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	publish(t, js, "a")
	if err := c.Kill(0); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.WaitReady(time.Minute); err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("WaitReady with no server running: %v after %s, want a prompt error", err, time.Since(start))
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if ack := publish(t, js, "b"); ack.Sequence != 2 {
		t.Fatalf("publish after restart: sequence %d, want 2", ack.Sequence)
	}
}
