package fault

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
)

// collector is an OTLP/HTTP trace receiver: what the processes export over the standard protocol.
type collector struct {
	mu    sync.Mutex
	spans []span
}

// span is a received span with the service that sent it.
type span struct {
	service, name       string
	traceID, id, parent string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectorpb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				c.spans = append(c.spans, received(service, s))
			}
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&collectorpb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func received(service string, s *tracepb.Span) span {
	return span{service: service, name: s.GetName(), traceID: hex.EncodeToString(s.GetTraceId()),
		id: hex.EncodeToString(s.GetSpanId()), parent: hex.EncodeToString(s.GetParentSpanId())}
}

func (c *collector) trace(id string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if s.traceID == id {
			out = append(out, s)
		}
	}
	return out
}

// With OTEL_EXPORTER_OTLP_ENDPOINT pointing at a collector, one command sent with a traceparent is one
// trace across the gateway, worker and projector processes — each exporting its own spans — from the
// caller's span to the read side's call.
func TestTraceAcrossProcesses(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	tp := newTopology(t)
	for _, p := range tp.ours() {
		p.env = append(p.env, "OTEL_EXPORTER_OTLP_ENDPOINT="+srv.URL, "OTEL_BSP_SCHEDULE_DELAY=100",
			"OTEL_SERVICE_NAME="+strings.Split(p.name, "-")[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := tp.startAllAtOnce(ctx); err != nil {
		t.Fatal(err)
	}
	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	cctx := metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-"+callerSpan+"-01")
	if _, err := tp.clients()[0].ProcessCommand(cctx, &cospb.ProcessCommandRequest{EntityId: "traced", Command: costest.Cmd("add:1")}); err != nil {
		t.Fatal(err)
	}
	// name → (service that must have sent it, parent span name; "" = the caller's span)
	want := map[string][2]string{
		"chief_of_state.v1.ChiefOfStateService/ProcessCommand": {"gateway", ""},
		"send cos.cmd.*.*":    {"gateway", "chief_of_state.v1.ChiefOfStateService/ProcessCommand"},
		"process cos.cmd.*.*": {"worker", "send cos.cmd.*.*"},
		"chief_of_state.v1.WriteSideHandlerService/HandleCommand": {"worker", "process cos.cmd.*.*"},
		"chief_of_state.v1.WriteSideHandlerService/HandleEvent":   {"worker", "process cos.cmd.*.*"},
		"send COS_EVENTS":    {"worker", "process cos.cmd.*.*"},
		"process COS_EVENTS": {"projector", "send COS_EVENTS"},
		"chief_of_state.v1.ReadSideHandlerService/HandleReadSide": {"projector", "process COS_EVENTS"},
	}
	var byName map[string]span
	var why string
	costest.Eventually(t, time.Minute, "the command's spans from every process", func() bool {
		byName = map[string]span{}
		for _, s := range col.trace(traceID) {
			byName[s.name] = s
		}
		for name := range want {
			if _, ok := byName[name]; !ok {
				why = fmt.Sprintf("missing %s; have %d spans", name, len(byName))
				return false
			}
		}
		return true
	}, &why)
	for name, w := range want {
		s := byName[name]
		if s.service != w[0] {
			t.Errorf("%s exported by %q, want %q", name, s.service, w[0])
		}
		parent := callerSpan
		if w[1] != "" {
			parent = byName[w[1]].id
		}
		if s.parent != parent {
			t.Errorf("%s: parent %s, want %s (%q)", name, s.parent, parent, w[1])
		}
	}
}
