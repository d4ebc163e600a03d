package node_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// system is a gateway plus workers on one NATS server, with a Counter write handler.
type system struct {
	t       *testing.T
	cfg     config.Config
	handler *costest.Counter
	client  cospb.ChiefOfStateServiceClient
	nc      *nats.Conn
	js      jetstream.JetStream
	gateway *costest.Node
	workers []*costest.Node
}

// embedded starts the single-process default: one node embedding NATS (listening on loopback so the
// test can inspect the stream).
func embedded(t *testing.T, mutate func(*config.Config)) *system {
	t.Helper()
	h := &costest.Counter{}
	port := costest.ServeGRPC(t, h.Register)
	cfg := costest.Config(t, "", port)
	cfg.NATS.Listen = "127.0.0.1:0"
	if mutate != nil {
		mutate(&cfg)
	}
	n := costest.StartNode(t, cfg, node.Roles{})
	s := &system{t: t, cfg: cfg, handler: h, gateway: n, workers: []*costest.Node{n}}
	s.connect(n.NATSURL)
	return s
}

// distributed starts a NATS server, one gateway-only node and the given number of worker-only nodes.
func distributed(t *testing.T, workers int, mutate func(*config.Config)) *system {
	t.Helper()
	srv := costest.StartNATS(t)
	h := &costest.Counter{}
	port := costest.ServeGRPC(t, h.Register)
	cfg := costest.Config(t, srv.ClientURL(), port)
	if mutate != nil {
		mutate(&cfg)
	}
	s := &system{t: t, cfg: cfg, handler: h}
	s.gateway = costest.StartNode(t, cfg, node.Roles{Gateway: true})
	for range workers {
		s.workers = append(s.workers, costest.StartNode(t, cfg, node.Roles{Worker: true}))
	}
	s.connect(srv.ClientURL())
	return s
}

func (s *system) connect(url string) {
	s.client = costest.Client(s.t, s.gateway.GRPCAddr)
	nc, err := nats.Connect(url)
	if err != nil {
		s.t.Fatalf("connect: %v", err)
	}
	s.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	s.nc, s.js = nc, js
}

func (s *system) send(ctx context.Context, id, cmd string, opts ...grpc.CallOption) (*cospb.ProcessCommandResponse, error) {
	return s.client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: id, Command: costest.Cmd(cmd)}, opts...)
}

func (s *system) mustSend(id, cmd string) *cospb.ProcessCommandResponse {
	s.t.Helper()
	resp, err := s.send(context.Background(), id, cmd)
	if err != nil {
		s.t.Fatalf("ProcessCommand(%q, %q): %v", id, cmd, err)
	}
	return resp
}

func (s *system) events(id string) []*cospb.EventWrapper {
	return costest.Events(s.t, s.js, id, s.cfg.NumShards)
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want %s", err, code)
	}
	if msg != "" && st.Message() != msg {
		t.Fatalf("message %q, want %q", st.Message(), msg)
	}
	return st
}

func TestFreshEntityAndRevisions(t *testing.T) {
	s := embedded(t, nil)
	resp := s.mustSend("acc-1", "add:5")
	if resp.GetMeta().GetRevisionNumber() != 1 || costest.Value(resp.GetState()) != 5 || resp.GetMeta().GetEntityId() != "acc-1" {
		t.Fatalf("first command: %v", resp)
	}
	if resp.GetMeta().GetRevisionDate() == nil {
		t.Fatal("revision_date not set")
	}
	first := s.handler.Commands()[0].Request
	if !first.GetPriorState().MessageIs(&emptypb.Empty{}) || first.GetPriorState().GetTypeUrl() != "type.googleapis.com/google.protobuf.Empty" {
		t.Fatalf("fresh prior state %v", first.GetPriorState())
	}
	if first.GetPriorEventMeta().GetEntityId() != "acc-1" || first.GetPriorEventMeta().GetRevisionNumber() != 0 {
		t.Fatalf("fresh prior meta %v", first.GetPriorEventMeta())
	}
	resp = s.mustSend("acc-1", "add:2")
	if resp.GetMeta().GetRevisionNumber() != 2 || costest.Value(resp.GetState()) != 7 {
		t.Fatalf("second command: %v", resp)
	}
	second := s.handler.Commands()[1].Request
	if costest.Value(second.GetPriorState()) != 5 || second.GetPriorEventMeta().GetRevisionNumber() != 1 {
		t.Fatalf("second command saw prior %v / %v", second.GetPriorState(), second.GetPriorEventMeta())
	}
	got, err := s.client.GetState(context.Background(), &cospb.GetStateRequest{EntityId: "acc-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.GetState(), resp.GetState()) || !proto.Equal(got.GetMeta(), resp.GetMeta()) {
		t.Fatalf("GetState %v, want %v", got, resp)
	}
	if n := len(s.events("acc-1")); n != 2 {
		t.Fatalf("%d events stored", n)
	}
}

func TestNoOpPersistsNothing(t *testing.T) {
	s := embedded(t, nil)
	for _, cmd := range []string{"noop", "emptyany"} {
		resp := s.mustSend("quiet", cmd)
		if !resp.GetState().MessageIs(&emptypb.Empty{}) || resp.GetMeta().GetRevisionNumber() != 0 || resp.GetMeta().GetEntityId() != "quiet" {
			t.Fatalf("%s on a fresh entity: %v", cmd, resp)
		}
	}
	_, err := s.client.GetState(context.Background(), &cospb.GetStateRequest{EntityId: "quiet"})
	wantCode(t, err, codes.NotFound, "")
	after := s.mustSend("busy", "add:3")
	resp := s.mustSend("busy", "noop")
	if !proto.Equal(resp.GetState(), after.GetState()) || !proto.Equal(resp.GetMeta(), after.GetMeta()) {
		t.Fatalf("no-op replied %v, want the prior %v", resp, after)
	}
	if n := len(s.events("busy")); n != 1 {
		t.Fatalf("%d events after a no-op, want 1", n)
	}
}

func TestLegacyEventField(t *testing.T) {
	s := embedded(t, nil)
	if resp := s.mustSend("legacy", "legacy"); resp.GetMeta().GetRevisionNumber() != 1 || costest.Value(resp.GetState()) != 1 {
		t.Fatalf("deprecated event field not honoured: %v", resp)
	}
}

func TestHandlerErrorKeepsStatusAndDetails(t *testing.T) {
	s := embedded(t, nil)
	_, err := s.send(context.Background(), "acc", "bad")
	st := wantCode(t, err, codes.InvalidArgument, "bad command")
	var found bool
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			v := br.GetFieldViolations()
			found = len(v) == 1 && v[0].GetField() == "value" && v[0].GetDescription() == "must not be bad"
		}
	}
	if !found {
		t.Fatalf("BadRequest detail lost: %v", st.Details())
	}
	if n := len(s.events("acc")); n != 0 {
		t.Fatalf("%d events after a handler error", n)
	}
}

func TestValidationAndHandlerContract(t *testing.T) {
	s := embedded(t, func(c *config.Config) {
		c.WriteSide.ProtoValidation = true
		c.WriteSide.EventProtos = []string{"google.protobuf.Int64Value"}
		c.WriteSide.StateProtos = []string{"google.protobuf.Int64Value"}
	})
	ctx := context.Background()
	_, err := s.send(ctx, "v", "wrongevent")
	wantCode(t, err, codes.InvalidArgument, "invalid event: type.googleapis.com/google.protobuf.StringValue")
	_, err = s.send(ctx, "v", "wrongstate")
	wantCode(t, err, codes.InvalidArgument, "invalid state: type.googleapis.com/google.protobuf.StringValue")
	_, err = s.send(ctx, "v", "emptystate")
	wantCode(t, err, codes.InvalidArgument, "event handler replied with empty state")
	if n := len(s.events("v")); n != 0 {
		t.Fatalf("%d events after rejected commands", n)
	}
	// The process keeps serving.
	if resp := s.mustSend("v", "add:1"); resp.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("after errors: %v", resp)
	}
}

func TestEmptyStateWithoutValidation(t *testing.T) {
	s := embedded(t, nil)
	_, err := s.send(context.Background(), "e", "emptystate")
	wantCode(t, err, codes.InvalidArgument, "event handler replied with empty state")
}

func TestHeaders(t *testing.T) {
	s := embedded(t, func(c *config.Config) {
		c.WriteSide.PropagatedHeaders = []string{"x-trace", "x-tenant-bin"}
		c.WriteSide.PersistedHeaders = []string{"x-user", "x-tenant-bin"}
	})
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"x-trace", "t1", "x-user", "alice", "x-user", "bob", "x-tenant-bin", string([]byte{0, 1, 2}), "x-other", "no")
	resp, err := s.send(ctx, "h", "add:1")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, h := range resp.GetMeta().GetHeaders() {
		switch h.GetKey() {
		case "x-user":
			keys = append(keys, h.GetKey()+"="+h.GetStringValue())
		case "x-tenant-bin":
			keys = append(keys, fmt.Sprintf("%s=%v", h.GetKey(), h.GetBytesValue()))
		default:
			t.Fatalf("unexpected persisted header %v", h)
		}
	}
	if got := strings.Join(keys, ","); got != "x-user=alice,x-user=bob,x-tenant-bin=[0 1 2]" {
		t.Fatalf("persisted headers %s", got)
	}
	stored := s.events("h")[0].GetMeta().GetHeaders()
	if len(stored) != 3 {
		t.Fatalf("stored headers %v", stored)
	}
	md := s.handler.Commands()[0].MD
	if v := md.Get("x-trace"); len(v) != 1 || v[0] != "t1" {
		t.Fatalf("propagated x-trace %v", v)
	}
	if v := md.Get("x-tenant-bin"); len(v) != 1 || v[0] != string([]byte{0, 1, 2}) {
		t.Fatalf("propagated x-tenant-bin %v", v)
	}
	if v := md.Get("x-other"); len(v) != 0 {
		t.Fatalf("unconfigured header propagated: %v", v)
	}
}

func TestBadInput(t *testing.T) {
	s := embedded(t, nil)
	ctx := context.Background()
	_, err := s.client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{Command: costest.Cmd("add:1")})
	wantCode(t, err, codes.InvalidArgument, "empty entity ID")
	_, err = s.client.GetState(ctx, &cospb.GetStateRequest{})
	wantCode(t, err, codes.InvalidArgument, "empty entity ID")
	long := strings.Repeat("x", 10*1024)
	_, err = s.send(ctx, long, "add:1")
	wantCode(t, err, codes.InvalidArgument, "")
	_, err = s.client.GetState(ctx, &cospb.GetStateRequest{EntityId: long})
	wantCode(t, err, codes.InvalidArgument, "")
	_, err = s.client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "x"})
	wantCode(t, err, codes.InvalidArgument, "missing command")
	_, err = s.client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "x", Command: &anypb.Any{Value: []byte("garbage")}})
	wantCode(t, err, codes.InvalidArgument, "missing command")
	// A type URL with garbage bytes reaches the handler, whose own error comes back.
	_, err = s.client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "x",
		Command: &anypb.Any{TypeUrl: "type.googleapis.com/google.protobuf.StringValue", Value: []byte{0xff, 0xff, 0xff}}})
	wantCode(t, err, codes.InvalidArgument, "")
	big, _ := anypb.New(wrapperspb.Bytes(make([]byte, s.cfg.MaxCommandBytes+1)))
	_, err = s.client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "x", Command: big})
	wantCode(t, err, codes.InvalidArgument, "")
	_, err = s.send(metadata.AppendToOutgoingContext(ctx, "x-cos-command-id", "has space"), "x", "add:1")
	wantCode(t, err, codes.InvalidArgument, "")
	// Garbage published straight onto a command subject gets an error reply; the worker keeps serving.
	key, _ := entity.NewKey("x", s.cfg.NumShards)
	reply, err := s.nc.Request(layout.Default().CommandSubject(key), []byte("\xff\xff garbage"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r natspb.CommandReply
	if err := proto.Unmarshal(reply.Data, &r); err != nil || r.GetStatus() == nil {
		t.Fatalf("garbage command reply %v, %v", &r, err)
	}
	// A command published on another entity's subject is refused.
	other, _ := entity.NewKey("y", s.cfg.NumShards)
	data, _ := proto.Marshal(&natspb.CommandRequest{EntityId: "x", Command: costest.Cmd("add:1")})
	reply, err = s.nc.Request(layout.Default().CommandSubject(other), data, 5*time.Second)
	if err != nil || proto.Unmarshal(reply.Data, &r) != nil || r.GetStatus() == nil {
		t.Fatalf("misrouted command: %v %v", &r, err)
	}
	if n := len(s.events("x")); n != 0 {
		t.Fatalf("%d events after bad input", n)
	}
	if resp := s.mustSend("x", "add:1"); resp.GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("after bad input: %v", resp)
	}
}

func TestUnusualIDsAreDistinct(t *testing.T) {
	s := embedded(t, nil)
	ids := []string{"a.b", "a b", "a/b", "*", ">", "a.*", "ünïcödé", "=YS5i", "a_b", "a-b", strings.Repeat("é", 255)}
	for i, id := range ids {
		s.mustSend(id, fmt.Sprintf("add:%d", i+1))
	}
	for i, id := range ids {
		got, err := s.client.GetState(context.Background(), &cospb.GetStateRequest{EntityId: id})
		if err != nil {
			t.Fatalf("GetState(%q): %v", id, err)
		}
		if costest.Value(got.GetState()) != int64(i+1) || got.GetMeta().GetRevisionNumber() != 1 || got.GetMeta().GetEntityId() != id {
			t.Fatalf("entity %q shares state: %v", id, got)
		}
	}
}

// Metadata over the gateway's limit is refused before anything runs; the gateway goes on serving.
func TestOversizedMetadataIsRefused(t *testing.T) {
	s := embedded(t, nil)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-big", strings.Repeat("a", node.MaxMetadataBytes+1))
	if _, err := s.send(ctx, "m-1", "add:1"); err == nil {
		t.Fatal("oversized metadata accepted")
	}
	if n := len(s.events("m-1")); n != 0 {
		t.Fatalf("%d events stored", n)
	}
	s.mustSend("m-1", "add:1")
}
