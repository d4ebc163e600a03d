package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cosnats/cosnats/internal/costest"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/gateway"
)

// A handler slower than the command deadline: the caller hears DEADLINE_EXCEEDED, and nothing is ever
// persisted for that command (the worker does not start an append after the deadline).
func TestSlowHandlerHitsTheCommandDeadline(t *testing.T) {
	s := embedded(t, func(c *config.Config) { c.CommandTimeout = time.Second })
	_, err := s.send(context.Background(), "slow", "hang")
	wantCode(t, err, codes.DeadlineExceeded, "")
	if n := len(s.events("slow")); n != 0 {
		t.Fatalf("%d events after a timed-out command", n)
	}
	// The worker is free again and the entity unaffected.
	if resp := s.mustSend("slow", "add:1"); resp.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("after the timeout: %v", resp)
	}
}

// Without any worker the command is certainly not processed, and the error says so.
func TestNoWorkerIsUnavailable(t *testing.T) {
	s := distributed(t, 0, nil)
	_, err := s.send(context.Background(), "nobody", "add:1")
	st := wantCode(t, err, codes.Unavailable, "")
	if !strings.Contains(st.Message(), "not processed") {
		t.Fatalf("message %q does not say the command was not processed", st.Message())
	}
}

// The gateway hands back the command id it used, generated when the caller sent none.
func TestCommandIDIsEchoed(t *testing.T) {
	s := embedded(t, nil)
	var header metadata.MD
	if _, err := s.client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: "e", Command: cmdAny("add:1")}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if ids := header.Get(gateway.CommandIDKey); len(ids) != 1 || ids[0] == "" {
		t.Fatalf("no generated command id in the response header: %v", header)
	}
	if _, err := s.client.ProcessCommand(withID("mine"), &cospb.ProcessCommandRequest{EntityId: "e", Command: cmdAny("add:1")}, grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if ids := header.Get(gateway.CommandIDKey); len(ids) != 1 || ids[0] != "mine" {
		t.Fatalf("command id not echoed: %v", header)
	}
}

func cmdAny(s string) *anypb.Any { return costest.Cmd(s) }
