package intake

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/schema"
)

func types(t testing.TB) *schema.Resolver {
	r, err := schema.New(schema.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDecodeHeaders(t *testing.T) {
	h := nats.Header{}
	h.Set("cos-entity-id", "a b")
	h.Set("Cos-Command-Type", "type.googleapis.com/google.protobuf.StringValue")
	h.Set("Nats-Msg-Id", "m-1")
	h.Set("X-Tenant", "blue")
	h.Add("X-Tenant", "green")
	h.Set("Trace-Bin", "AAEC") // base64 of 0x00 0x01 0x02
	h.Set("Accept", "application/json; charset=utf-8")
	data, _ := proto.Marshal(wrapperspb.String("x"))
	c, err := Decode(context.Background(), h, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Request.GetEntityId() != "a b" || c.Request.GetCommand().GetTypeUrl() != "type.googleapis.com/google.protobuf.StringValue" || c.Accept != ContentJSON {
		t.Fatalf("decoded %v accept %s", c.Request, c.Accept)
	}
	if got := c.MD.Get(gateway.CommandIDKey); len(got) != 1 || got[0] != "m-1" {
		t.Fatalf("command id %v", got)
	}
	if got := c.MD.Get("x-tenant"); len(got) != 2 {
		t.Fatalf("x-tenant %v", got)
	}
	if got := c.MD.Get("trace-bin"); len(got) != 1 || got[0] != "\x00\x01\x02" {
		t.Fatalf("trace-bin %q", got)
	}
	for _, k := range []string{"cos-entity-id", "nats-msg-id", "accept"} {
		if len(c.MD.Get(k)) != 0 {
			t.Fatalf("%s passed on as metadata", k)
		}
	}
	// Cos-Command-Id wins over Nats-Msg-Id.
	h.Set(HeaderCommandID, "c-1")
	if c, _ := Decode(context.Background(), h, data, nil); c.MD.Get(gateway.CommandIDKey)[0] != "c-1" {
		t.Fatalf("command id %v", c.MD.Get(gateway.CommandIDKey))
	}
	// JSON without descriptors.
	h.Set(HeaderContentType, ContentJSON)
	if _, err := Decode(context.Background(), h, []byte(`"x"`), nil); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "COS_WRITE_SIDE_DESCRIPTORS") {
		t.Fatalf("JSON without types: %v", err)
	}
	// Too many headers.
	for i := range MaxHeaders {
		h.Set("X-"+strings.Repeat("a", i+1), "v")
	}
	if _, err := Decode(context.Background(), h, data, nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("too many headers: %v", err)
	}
}

func TestEncode(t *testing.T) {
	o := Outcome("e", gateway.Result{CommandID: "c", Err: status.Error(codes.FailedPrecondition, "no\nway")})
	enc, err := Encode(o, ContentJSON, types(t))
	if err != nil {
		t.Fatal(err)
	}
	if enc.Header.Get(HeaderStatus) != "9" || enc.Header.Get(HeaderStatusMessage) != "no way" || enc.Header.Get(HeaderContentType) != ContentJSON ||
		!strings.Contains(string(enc.Data), `"code":9`) {
		t.Fatalf("encoded %v %s", enc.Header, enc.Data)
	}
	// A state of a type nobody knows cannot be JSON: protobuf, and the reason.
	o = Outcome("e", gateway.Result{CommandID: "c", Response: &cospb.ProcessCommandResponse{
		State: anyOf("type.googleapis.com/unknown.v1.State"), Meta: &cospb.MetaData{RevisionNumber: 4}}})
	enc, err = Encode(o, ContentJSON, types(t))
	if err != nil {
		t.Fatal(err)
	}
	var back natspb.CommandOutcome
	if enc.Header.Get(HeaderContentType) != ContentProtobuf || enc.Header.Get(HeaderEncodingError) == "" || proto.Unmarshal(enc.Data, &back) != nil ||
		enc.Header.Get(HeaderRevision) != "4" || back.GetResponse().GetState().GetTypeUrl() != "type.googleapis.com/unknown.v1.State" {
		t.Fatalf("fallback %v", enc.Header)
	}
}

// FuzzDecode feeds arbitrary headers and payloads to the producer API's decoder: it must answer with a
// command or an INVALID_ARGUMENT status, never panic.
func FuzzDecode(f *testing.F) {
	data, _ := proto.Marshal(wrapperspb.String("add:1"))
	f.Add("acc-1", "google.protobuf.StringValue", "", "", "", data)
	f.Add("acc-1", "google.protobuf.StringValue", "application/json", "application/json", "id-1", []byte(`"add:1"`))
	f.Add("", "x", "text/plain", "", "", []byte{0xff})
	f.Add("a", "google.protobuf.Int64Value", "application/json", "", "bad id", []byte(`{`))
	r := types(f)
	f.Fuzz(func(t *testing.T, entity, typ, content, accept, id string, body []byte) {
		h := nats.Header{}
		h.Set(HeaderEntityID, entity)
		h.Set(HeaderCommandType, typ)
		h.Set(HeaderContentType, content)
		h.Set(HeaderAccept, accept)
		h.Set(HeaderCommandID, id)
		h.Set("X-Data-Bin", string(body))
		c, err := Decode(context.Background(), h, body, r)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error %v is not INVALID_ARGUMENT", err)
			}
			return
		}
		if c.Request.GetEntityId() != entity || c.Request.GetCommand() == nil {
			t.Fatalf("decoded %v from entity %q", c.Request, entity)
		}
		if _, err := Encode(Outcome(entity, gateway.Result{CommandID: id, Response: &cospb.ProcessCommandResponse{State: c.Request.GetCommand()}}), c.Accept, r); err != nil {
			t.Fatalf("encode: %v", err)
		}
	})
}

func anyOf(url string) *anypb.Any { return &anypb.Any{TypeUrl: url, Value: []byte{8, 1}} }
