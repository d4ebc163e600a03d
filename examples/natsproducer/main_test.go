package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"

	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/node"
)

// The producer against the quickstart's shape: embedded NATS listening for TCP clients, the bank
// handler with reflection (JSON commands), everything in one node.
func TestProducerAgainstTheSystem(t *testing.T) {
	port := costest.ServeGRPC(t, func(s *grpc.Server) {
		writeside.New().Register(s)
		reflection.Register(s)
	})
	cfg := costest.Config(t, "", port)
	cfg.NATS.Listen = "127.0.0.1:0"
	n := costest.StartNode(t, cfg, node.Roles{})
	var out bytes.Buffer
	if err := run(context.Background(), n.NATSURL, "acc-test", &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"sync: opened acc-test at revision 1",
		`"balance":"1000"`,
		"async: accepted as intake sequence 1",
		"applied at revision 2",
		`"balance":"1250"`,
	} {
		if !strings.Contains(strings.ReplaceAll(got, " ", ""), strings.ReplaceAll(want, " ", "")) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
