// Package intake is the NATS producer API: commands sent as plain NATS messages, with the entity id,
// command type and command id in headers and the command message itself as the payload (protobuf, or
// JSON converted with the write handler's descriptors). Two ways in, both served by the gateways and
// both run exactly like ProcessCommand (same validation, idempotency and errors):
//   - synchronous (Sync): a NATS request on <root>.process, answered with the outcome;
//   - asynchronous (Async): a publish to the work-queue stream <PREFIX>_INTAKE, acknowledged once stored;
//     the gateways take the commands one pinned gateway at a time, run them in order per entity, and
//     publish each outcome on <root>.outcomes.<command id>.
//
// docs/nats-producers.md is the contract.
package intake

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/schema"
)

// Headers of the producer API. Producers' header names are matched without regard to case.
const (
	HeaderEntityID    = "Cos-Entity-Id"    // required: the entity the command is for
	HeaderCommandType = "Cos-Command-Type" // required: full message name (or type URL) of the payload
	HeaderCommandID   = "Cos-Command-Id"   // optional idempotency key (x-cos-command-id over gRPC)
	HeaderReplyTo     = "Cos-Reply-To"     // asynchronous intake: also publish the outcome there
	HeaderContentType = "Content-Type"     // application/protobuf (default) or application/json
	HeaderAccept      = "Accept"           // encoding of the outcome; default: the command's

	// In outcomes.
	HeaderStatus        = "Cos-Status"         // gRPC status code as a number, 0 = OK
	HeaderStatusMessage = "Cos-Status-Message" // the error message (one line), errors only
	HeaderRevision      = "Cos-Revision"       // the entity's revision after the command, OK only
	HeaderReplayed      = "Cos-Replayed"       // "true" when answered from an earlier run of the id
	HeaderIntakeSeq     = "Cos-Intake-Sequence"
	HeaderEncodingError = "Cos-Encoding-Error" // why the outcome is protobuf although JSON was asked for

	// Nats-Msg-Id is the intake stream's deduplication key; it is also the command id when
	// Cos-Command-Id is absent.
	headerMsgID = "Nats-Msg-Id"
)

// Content types.
const (
	ContentProtobuf = "application/protobuf"
	ContentJSON     = "application/json"
)

// Limits on what a producer controls, besides the command size the gateway checks.
const (
	MaxHeaders     = 64
	MaxHeaderBytes = 8 << 10
)

// Command is a producer's message, decoded.
type Command struct {
	Request *cospb.ProcessCommandRequest
	// MD are the headers as gRPC metadata (lowercase keys): the command id under
	// gateway.CommandIDKey and the headers COS_WRITE_SIDE_PROPAGATED_HEADERS and
	// COS_WRITE_PERSISTED_HEADERS select.
	MD      metadata.MD
	Accept  string // encoding of the outcome
	ReplyTo string // Cos-Reply-To
}

// Types finds message types for JSON; *schema.Resolver implements it.
type Types interface {
	AnyFromJSON(ctx context.Context, name string, data []byte) (*anypb.Any, error)
}

// header returns a header's first value, its name matched without regard to case.
func header(h nats.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, v := range h {
		if len(v) > 0 && strings.EqualFold(k, name) {
			return v[0]
		}
	}
	return ""
}

// mediaType is a Content-Type or Accept value without parameters, lowercase; "" stays "".
func mediaType(v string) string {
	v, _, _ = strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(v))
}

// encoding maps a media type to ContentJSON or ContentProtobuf.
func encoding(v string) (string, error) {
	switch mediaType(v) {
	case "", ContentProtobuf, "application/x-protobuf", "application/octet-stream":
		return ContentProtobuf, nil
	case ContentJSON:
		return ContentJSON, nil
	}
	return "", fmt.Errorf("unsupported content type %q: use %s or %s", v, ContentProtobuf, ContentJSON)
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// Decode turns a producer's message into a command. Its errors are INVALID_ARGUMENT statuses. types
// may be nil: then only protobuf payloads are accepted.
func Decode(ctx context.Context, h nats.Header, data []byte, types Types) (Command, error) {
	var c Command
	accept, err := encoding(header(h, HeaderAccept))
	if err != nil {
		return c, invalid("%s: %v", HeaderAccept, err)
	}
	content, err := encoding(header(h, HeaderContentType))
	if err != nil {
		return c, invalid("%s: %v", HeaderContentType, err)
	}
	c.Accept = content
	if header(h, HeaderAccept) != "" {
		c.Accept = accept
	}
	if len(h) > MaxHeaders {
		return c, invalid("%d headers, at most %d are accepted", len(h), MaxHeaders)
	}
	size := 0
	for k, vs := range h {
		for _, v := range vs {
			size += len(k) + len(v)
		}
	}
	if size > MaxHeaderBytes {
		return c, invalid("headers are %d bytes, at most %d are accepted", size, MaxHeaderBytes)
	}
	c.ReplyTo = header(h, HeaderReplyTo)
	entityID := header(h, HeaderEntityID)
	if entityID == "" {
		return c, invalid("missing header %s: the entity id", HeaderEntityID)
	}
	typ := strings.TrimSpace(header(h, HeaderCommandType))
	if typ == "" {
		return c, invalid("missing header %s: the command's full message name, e.g. bankaccount.v1.Credit", HeaderCommandType)
	}
	// gRPC callers cannot send anything else (protobuf strings are UTF-8); neither can producers.
	for _, v := range []struct{ name, value string }{{HeaderEntityID, entityID}, {HeaderCommandType, typ}, {HeaderCommandID, header(h, HeaderCommandID)}} {
		if !utf8.ValidString(v.value) {
			return c, invalid("header %s is not valid UTF-8", v.name)
		}
	}
	name := typ[strings.LastIndexByte(typ, '/')+1:]
	var cmd *anypb.Any
	switch content {
	case ContentJSON:
		if types == nil {
			return c, invalid("JSON commands need the write handler's message descriptors: set COS_WRITE_SIDE_DESCRIPTORS, or serve gRPC reflection on the write handler")
		}
		if cmd, err = types.AnyFromJSON(ctx, name, data); err != nil {
			return c, invalid("command: %v", err)
		}
	default:
		url := typ
		if !strings.Contains(typ, "/") {
			url = schema.TypeURLPrefix + typ
		}
		cmd = &anypb.Any{TypeUrl: url, Value: data}
	}
	c.Request = &cospb.ProcessCommandRequest{EntityId: entityID, Command: cmd}
	c.MD, err = headerMetadata(h)
	return c, err
}

// headerMetadata turns the headers that are not the API's own into gRPC metadata: keys lowercase,
// values of "-bin" keys base64-decoded (gRPC's convention for binary metadata).
func headerMetadata(h nats.Header) (metadata.MD, error) {
	md := metadata.MD{}
	for k, vs := range h {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "cos-") || strings.HasPrefix(lk, "nats-") || lk == "content-type" || lk == "accept" {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(lk, "-bin") {
				b, err := decodeBase64(v)
				if err != nil {
					return nil, invalid("header %s: a -bin header carries base64: %v", k, err)
				}
				v = string(b)
			}
			md.Append(lk, v)
		}
	}
	id := header(h, HeaderCommandID)
	if id == "" {
		id = header(h, headerMsgID)
	}
	if id != "" {
		md.Set(gateway.CommandIDKey, id)
	}
	return md, nil
}

func decodeBase64(v string) ([]byte, error) {
	if b, err := base64.StdEncoding.DecodeString(v); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(v)
}

// Outcome builds the outcome of a command from its result.
func Outcome(entityID string, res gateway.Result) *natspb.CommandOutcome {
	o := &natspb.CommandOutcome{CommandId: strings.ToValidUTF8(res.CommandID, "\uFFFD"), EntityId: strings.ToValidUTF8(entityID, "\uFFFD"), Replayed: res.Replayed}
	if res.Err != nil {
		o.Result = &natspb.CommandOutcome_Error{Error: errorStatus(res.Err)}
	} else {
		o.Result = &natspb.CommandOutcome_Response{Response: res.Response}
	}
	return o
}

func errorStatus(err error) *natspb.ErrorStatus {
	p := status.Convert(err).Proto()
	// A message may quote what a producer sent; protobuf strings must be UTF-8.
	return &natspb.ErrorStatus{Code: p.GetCode(), Message: strings.ToValidUTF8(p.GetMessage(), "\uFFFD"), Details: p.GetDetails()}
}

// Encoded is an outcome ready to send.
type Encoded struct {
	Header nats.Header
	Data   []byte
}

// JSONTypes renders messages with Any fields as JSON; *schema.Resolver implements it.
type JSONTypes interface {
	ToJSON(m proto.Message) ([]byte, error)
}

// Encode renders an outcome in the encoding asked for, with the summary headers. JSON that cannot be
// rendered (a state type no descriptor source knows) falls back to protobuf and says why.
func Encode(o *natspb.CommandOutcome, accept string, types JSONTypes) (Encoded, error) {
	h := nats.Header{}
	switch r := o.GetResult().(type) {
	case *natspb.CommandOutcome_Response:
		h.Set(HeaderStatus, "0")
		h.Set(HeaderRevision, strconv.FormatUint(uint64(r.Response.GetMeta().GetRevisionNumber()), 10))
	case *natspb.CommandOutcome_Error:
		h.Set(HeaderStatus, strconv.Itoa(int(r.Error.GetCode())))
		h.Set(HeaderStatusMessage, oneLine(r.Error.GetMessage()))
	}
	if o.GetCommandId() != "" {
		h.Set(HeaderCommandID, o.GetCommandId())
	}
	if o.GetEntityId() != "" {
		h.Set(HeaderEntityID, oneLine(o.GetEntityId()))
	}
	if o.GetReplayed() {
		h.Set(HeaderReplayed, "true")
	}
	if o.GetIntakeSequence() > 0 {
		h.Set(HeaderIntakeSeq, strconv.FormatUint(o.GetIntakeSequence(), 10))
	}
	if accept == ContentJSON {
		var data []byte
		var err error
		if types != nil {
			data, err = types.ToJSON(o)
		} else {
			data, err = protojson.Marshal(o)
		}
		if err == nil {
			h.Set(HeaderContentType, ContentJSON)
			return Encoded{Header: h, Data: data}, nil
		}
		h.Set(HeaderEncodingError, oneLine("no JSON: "+err.Error()))
	}
	data, err := proto.Marshal(o)
	if err != nil {
		return Encoded{}, fmt.Errorf("encode outcome: %w", err)
	}
	h.Set(HeaderContentType, ContentProtobuf)
	return Encoded{Header: h, Data: data}, nil
}

// oneLine makes a header value of s: no line breaks, at most 1 KiB.
func oneLine(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}
