package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/schema"
)

// jsonOptions renders messages with their .proto field names and every field, zero or not: a balance
// of 0 is an answer, not a missing field.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// protoJSON renders a message of this project's protos (compiled in, so it cannot fail on types).
func protoJSON(m proto.Message) json.RawMessage {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": err.Error()})
	}
	return compactJSON(b)
}

// compactJSON normalises JSON: protojson varies its whitespace on purpose.
func compactJSON(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}

// writeJSON prints v indented (multi-line documents) or compact (one line per record).
func writeJSON(w io.Writer, v any, indent bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	if indent {
		var out bytes.Buffer
		if err := json.Indent(&out, b, "", "  "); err == nil {
			b = out.Bytes()
		}
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// renderer turns the application's Any values (states, events) into JSON with the resolver; a type
// it cannot resolve is printed as type URL and base64 bytes, with one warning per type on stderr.
type renderer struct {
	r      *schema.Resolver
	stderr io.Writer
	warned map[string]bool
}

func newRenderer(r *schema.Resolver, stderr io.Writer) *renderer {
	return &renderer{r: r, stderr: stderr, warned: map[string]bool{}}
}

// rawAny is an Any as its own two fields: what is left to show when its type is unknown.
type rawAny struct {
	TypeURL string `json:"type_url"`
	Value   []byte `json:"value"` // base64 in JSON
}

// any renders a (what names it in the warning: "state", "event").
func (x *renderer) any(a *anypb.Any, what string) json.RawMessage {
	if a == nil {
		return json.RawMessage("null")
	}
	opts := jsonOptions
	opts.Resolver = x.r
	b, err := opts.Marshal(a)
	if err == nil {
		return compactJSON(b)
	}
	x.warn(a.GetTypeUrl(), what, err)
	b, _ = json.Marshal(rawAny{TypeURL: a.GetTypeUrl(), Value: a.GetValue()})
	return b
}

func (x *renderer) warn(typeURL, what string, err error) {
	if x.warned[typeURL] {
		return
	}
	x.warned[typeURL] = true
	why := "is unknown"
	if !strings.Contains(err.Error(), schema.ErrUnknownType.Error()) {
		why = "could not be resolved or decoded (" + oneLine(err.Error()) + ")"
	}
	fmt.Fprintf(x.stderr, "cosctl: warning: %s type %s %s: printed as type_url and base64 value (give --descriptors FILE or --handler HOST:PORT)\n",
		what, typeURL, why)
}

// meta renders MetaData; its data map holds Any values too, dropped (with a warning) when unknown.
func (x *renderer) meta(m *cospb.MetaData) json.RawMessage {
	if m == nil {
		return json.RawMessage("null")
	}
	opts := jsonOptions
	opts.Resolver = x.r
	b, err := opts.Marshal(m)
	if err == nil {
		return compactJSON(b)
	}
	c := proto.CloneOf(m)
	for k, v := range c.GetData() {
		x.warn(v.GetTypeUrl(), "meta.data["+k+"]", err)
	}
	c.Data = nil
	return protoJSON(c)
}

// stateOutput is what process and get print: ProcessCommandResponse's fields, plus the command id
// the gateway used (process only).
type stateOutput struct {
	State     json.RawMessage `json:"state"`
	Meta      json.RawMessage `json:"meta"`
	CommandID string          `json:"command_id,omitempty"`
}

// printState prints a state and its meta in the chosen format.
func (c *call) printState(x *renderer, state *anypb.Any, meta *cospb.MetaData, commandID string) error {
	out := stateOutput{State: x.any(state, "state"), Meta: x.meta(meta), CommandID: commandID}
	if c.format() == "json" {
		return writeJSON(c.stdout, out, true)
	}
	tw := newTable(c.stdout)
	fmt.Fprintf(tw, "entity_id\t%s\n", meta.GetEntityId())
	fmt.Fprintf(tw, "revision\t%d\n", meta.GetRevisionNumber())
	if d := meta.GetRevisionDate(); d != nil {
		fmt.Fprintf(tw, "revision_date\t%s\n", d.AsTime().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	}
	if commandID != "" {
		fmt.Fprintf(tw, "command_id\t%s\n", commandID)
	}
	for _, h := range meta.GetHeaders() {
		v := h.GetStringValue()
		if h.GetBytesValue() != nil {
			v = fmt.Sprintf("%x", h.GetBytesValue())
		}
		fmt.Fprintf(tw, "header\t%s=%s\n", h.GetKey(), v)
	}
	fmt.Fprintf(tw, "state\t%s\n", out.State)
	return tw.Flush()
}

// table aligns tab-separated cells in columns and drops the padding tabwriter leaves at the end of
// lines whose last cells are empty (so `awk` and diff see clean lines).
type table struct {
	w   io.Writer
	buf bytes.Buffer
	tw  *tabwriter.Writer
}

func newTable(w io.Writer) *table {
	t := &table{w: w}
	t.tw = tabwriter.NewWriter(&t.buf, 0, 4, 2, ' ', 0)
	return t
}

func (t *table) Write(p []byte) (int, error) { return t.tw.Write(p) }

func (t *table) Flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for _, line := range strings.SplitAfter(t.buf.String(), "\n") {
		if line == "" {
			continue
		}
		out.WriteString(strings.TrimRight(line, " \n"))
		if strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	t.buf.Reset()
	_, err := io.WriteString(t.w, out.String())
	return err
}

// typeName is the message name of a type URL (what follows the last '/').
func typeName(url string) string {
	return url[strings.LastIndexByte(url, '/')+1:]
}
