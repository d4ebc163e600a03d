package schema_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"

	bankpb "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/schema"
)

// The example's types are compiled into this test binary, so the global registry would find them; the
// tests therefore ask for a message that only the sources know, by renaming the example's file.
func renamedBankFile(t *testing.T) *descriptorpb.FileDescriptorProto {
	t.Helper()
	fd := protodesc.ToFileDescriptorProto(bankpb.File_bankaccount_v1_bankaccount_proto)
	fd.Name = proto.String("other/v1/other.proto")
	fd.Package = proto.String("other.v1")
	return fd
}

func TestDescriptorSetFile(t *testing.T) {
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{renamedBankFile(t)}}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "set.pb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := schema.New(schema.Options{DescriptorSet: path})
	if err != nil {
		t.Fatal(err)
	}
	a, err := r.AnyFromJSON(context.Background(), "other.v1.Credit", []byte(`{"amount":"25"}`))
	if err != nil {
		t.Fatal(err)
	}
	var c bankpb.Credit // same field numbers, so the bytes decode as the example's message
	if err := proto.Unmarshal(a.GetValue(), &c); err != nil || c.GetAmount() != 25 || a.GetTypeUrl() != "type.googleapis.com/other.v1.Credit" {
		t.Fatalf("any %v amount %d err %v", a.GetTypeUrl(), c.GetAmount(), err)
	}
	if _, err := r.AnyFromJSON(context.Background(), "other.v1.Credit", []byte(`{"amont":"25"}`)); err == nil {
		t.Fatal("misspelt field accepted")
	}
	if _, err := r.Find(context.Background(), "other.v1.Nope"); !errors.Is(err, schema.ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := r.Find(context.Background(), "not a name"); err == nil {
		t.Fatal("invalid name accepted")
	}
	// Rendering an Any of the file's type to JSON.
	out, err := r.ToJSON(&cospb.ProcessCommandResponse{State: a})
	if err != nil || !strings.Contains(string(out), `"@type":"type.googleapis.com/other.v1.Credit"`) || !strings.Contains(string(out), `"amount":"25"`) {
		t.Fatalf("json %s err %v", out, err)
	}
}

func TestBadDescriptorSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.pb")
	if err := os.WriteFile(path, []byte("not a descriptor set"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := schema.New(schema.Options{DescriptorSet: path}); err == nil {
		t.Fatal("garbage accepted")
	}
	if _, err := schema.New(schema.Options{DescriptorSet: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Fatal("missing file accepted")
	}
}

// reflectionServer serves the example handler with reflection, and a renamed copy of its file (so
// the lookup has to go through reflection).
func reflectionServer(t *testing.T) *grpc.ClientConn {
	t.Helper()
	fd, err := protodesc.NewFile(renamedBankFile(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	writeside.New().Register(srv)
	files := new(protoregistry.Files)
	if err := files.RegisterFile(fd); err != nil {
		t.Fatal(err)
	}
	rpb.RegisterServerReflectionServer(srv, reflection.NewServerV1(reflection.ServerOptions{
		Services: srv, DescriptorResolver: both{files}, ExtensionResolver: protoregistry.GlobalTypes}))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// both finds descriptors in extra files, then in the compiled-in ones.
type both struct{ extra *protoregistry.Files }

func (b both) FindFileByPath(p string) (protoreflect.FileDescriptor, error) {
	if fd, err := b.extra.FindFileByPath(p); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(p)
}

func (b both) FindDescriptorByName(n protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := b.extra.FindDescriptorByName(n); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(n)
}

func TestReflection(t *testing.T) {
	conn := reflectionServer(t)
	r, err := schema.New(schema.Options{Reflection: conn})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A type of the handler's own registered service file.
	if _, err := r.Find(ctx, "chief_of_state.v1.HandleCommandRequest"); err != nil {
		t.Fatal(err)
	}
	// A message only the reflection server knows.
	o, err := r.AnyFromJSON(ctx, "other.v1.OpenAccount", []byte(`{"owner":"ann","initialBalance":"5"}`))
	if err != nil {
		t.Fatal(err)
	}
	var open bankpb.OpenAccount
	if err := proto.Unmarshal(o.GetValue(), &open); err != nil || open.GetOwner() != "ann" || open.GetInitialBalance() != 5 {
		t.Fatalf("open %v err %v", &open, err)
	}
	// The example's messages: compiled in here too, found first in the global registry.
	a, err := r.AnyFromJSON(ctx, "bankaccount.v1.Debit", []byte(`{"amount":7}`))
	if err != nil {
		t.Fatal(err)
	}
	var d bankpb.Debit
	if err := anypb.UnmarshalTo(a, &d, proto.UnmarshalOptions{}); err != nil || d.GetAmount() != 7 {
		t.Fatalf("debit %v err %v", d.GetAmount(), err)
	}
	if _, err := r.Find(ctx, "no.such.Type"); !errors.Is(err, schema.ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
}
