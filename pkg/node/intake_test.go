package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// natsCommand builds a producer's message for the Counter handler.
func natsCommand(subject, entity, cmd string, hdr ...string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Header.Set(intake.HeaderEntityID, entity)
	m.Header.Set(intake.HeaderCommandType, "google.protobuf.StringValue")
	m.Data, _ = proto.Marshal(wrapperspb.String(cmd))
	for i := 0; i+1 < len(hdr); i += 2 {
		m.Header.Set(hdr[i], hdr[i+1])
	}
	return m
}

func decodeOutcome(t *testing.T, m *nats.Msg) *natspb.CommandOutcome {
	t.Helper()
	if ct := m.Header.Get(intake.HeaderContentType); ct != intake.ContentProtobuf {
		t.Fatalf("outcome content type %q (%s)", ct, m.Header.Get(intake.HeaderEncodingError))
	}
	var o natspb.CommandOutcome
	if err := proto.Unmarshal(m.Data, &o); err != nil {
		t.Fatalf("outcome: %v", err)
	}
	return &o
}

func request(t *testing.T, nc *nats.Conn, m *nats.Msg) *nats.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	return r
}

func TestSyncIntake(t *testing.T) {
	s := embedded(t, func(c *config.Config) { c.WriteSide.PersistedHeaders = []string{"x-tenant"} })
	subj := layout.Default().ProcessSubject()

	// Protobuf in, protobuf out; an extra header reaches the event's meta like gRPC metadata would.
	r := request(t, s.nc, natsCommand(subj, "acc 1", "add:5", "X-Tenant", "blue"))
	if r.Header.Get(intake.HeaderStatus) != "0" || r.Header.Get(intake.HeaderRevision) != "1" || r.Header.Get(intake.HeaderCommandID) == "" {
		t.Fatalf("reply headers %v", r.Header)
	}
	o := decodeOutcome(t, r)
	if costest.Value(o.GetResponse().GetState()) != 5 || o.GetEntityId() != "acc 1" || o.GetResponse().GetMeta().GetRevisionNumber() != 1 {
		t.Fatalf("outcome %v", o)
	}
	ev := s.events("acc 1")
	if len(ev) != 1 || len(ev[0].GetMeta().GetHeaders()) != 1 || ev[0].GetMeta().GetHeaders()[0].GetStringValue() != "blue" {
		t.Fatalf("stored %v", ev)
	}

	// JSON in, JSON out (a well-known type: no descriptors needed).
	m := nats.NewMsg(subj)
	m.Header.Set("cos-entity-id", "acc 1") // header names in any case
	m.Header.Set("COS-COMMAND-TYPE", "google.protobuf.StringValue")
	m.Header.Set(intake.HeaderContentType, intake.ContentJSON)
	m.Header.Set(intake.HeaderCommandID, "cmd-json-1")
	m.Data = []byte(`"add:3"`)
	r = request(t, s.nc, m)
	var js struct {
		CommandID string `json:"commandId"`
		Response  struct {
			State struct {
				Type  string `json:"@type"`
				Value string `json:"value"`
			} `json:"state"`
			Meta struct {
				RevisionNumber int `json:"revisionNumber"`
			} `json:"meta"`
		} `json:"response"`
	}
	if err := json.Unmarshal(r.Data, &js); err != nil || r.Header.Get(intake.HeaderContentType) != intake.ContentJSON {
		t.Fatalf("JSON reply %s (%v): %v", r.Data, r.Header, err)
	}
	if js.CommandID != "cmd-json-1" || js.Response.State.Value != "8" || js.Response.Meta.RevisionNumber != 2 {
		t.Fatalf("JSON reply %s", r.Data)
	}

	// The same command id again: answered from the log, nothing stored.
	r = request(t, s.nc, m)
	if r.Header.Get(intake.HeaderReplayed) != "true" || r.Header.Get(intake.HeaderRevision) != "2" {
		t.Fatalf("replay headers %v", r.Header)
	}
	if n := len(s.events("acc 1")); n != 2 {
		t.Fatalf("%d events after a replay", n)
	}

	// The handler's error with its details, as ProcessCommand would return it.
	r = request(t, s.nc, natsCommand(subj, "acc 1", "bad"))
	o = decodeOutcome(t, r)
	if r.Header.Get(intake.HeaderStatus) != strconv.Itoa(int(codes.InvalidArgument)) || o.GetError().GetMessage() != "bad command" || len(o.GetError().GetDetails()) != 1 {
		t.Fatalf("handler error %v %v", r.Header, o)
	}
	var br errdetails.BadRequest
	if err := o.GetError().GetDetails()[0].UnmarshalTo(&br); err != nil || br.GetFieldViolations()[0].GetField() != "value" {
		t.Fatalf("details %v: %v", o.GetError().GetDetails(), err)
	}

	// Bad input is refused clearly.
	for _, c := range []struct {
		hdr  []string
		data string
		want string
	}{
		{[]string{intake.HeaderEntityID, ""}, "", intake.HeaderEntityID},
		{[]string{intake.HeaderCommandType, ""}, "", intake.HeaderCommandType},
		{[]string{intake.HeaderContentType, "text/plain"}, "", "unsupported content type"},
		{[]string{intake.HeaderContentType, intake.ContentJSON, intake.HeaderCommandType, "no.such.Type"}, "{}", "no.such.Type"},
		{[]string{intake.HeaderContentType, intake.ContentJSON}, `{"nope":1}`, "JSON is not a valid"},
		{[]string{intake.HeaderCommandID, "has space"}, "", "x-cos-command-id"},
	} {
		m := natsCommand(subj, "acc 2", "add:1", c.hdr...)
		if c.data != "" {
			m.Data = []byte(c.data)
		}
		r := request(t, s.nc, m)
		if r.Header.Get(intake.HeaderStatus) != strconv.Itoa(int(codes.InvalidArgument)) || !strings.Contains(r.Header.Get(intake.HeaderStatusMessage), c.want) {
			t.Errorf("%v: status %q %q, want INVALID_ARGUMENT mentioning %q", c.hdr, r.Header.Get(intake.HeaderStatus), r.Header.Get(intake.HeaderStatusMessage), c.want)
		}
	}
	if n := len(s.events("acc 2")); n != 0 {
		t.Fatalf("refused commands stored %d events", n)
	}
}

// outcomes collects every outcome published (core NATS sees each publish, also those the outcome
// stream would deduplicate).
type outcomes struct {
	mu   sync.Mutex
	byID map[string][]*natspb.CommandOutcome
}

func watchOutcomes(t *testing.T, nc *nats.Conn) *outcomes {
	t.Helper()
	o := &outcomes{byID: map[string][]*natspb.CommandOutcome{}}
	sub, err := nc.Subscribe(layout.Default().OutcomeSubjects(), func(m *nats.Msg) {
		var out natspb.CommandOutcome
		if err := proto.Unmarshal(m.Data, &out); err != nil {
			t.Errorf("undecodable outcome: %v", err)
			return
		}
		o.mu.Lock()
		o.byID[out.GetCommandId()] = append(o.byID[out.GetCommandId()], &out)
		o.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return o
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.byID)
}

func (o *outcomes) get(id string) []*natspb.CommandOutcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*natspb.CommandOutcome(nil), o.byID[id]...)
}

func publish(t *testing.T, js jetstream.JetStream, m *nats.Msg) (*jetstream.PubAck, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return js.PublishMsg(ctx, m)
}

// A gateway without workers keeps the intake's commands (retrying them) until workers come; a full
// intake refuses publishes; then every command runs once, in order per entity, with one outcome each.
func TestAsyncIntake(t *testing.T) {
	s := distributed(t, 0, func(c *config.Config) { c.Intake.MaxMessages = 20 })
	lay := layout.Default()
	out := watchOutcomes(t, s.nc)
	replies, err := s.nc.SubscribeSync("my.replies")
	if err != nil {
		t.Fatal(err)
	}

	const entities, per = 4, 4
	ids := map[string][]string{} // entity → command ids in acceptance order
	for i := range per {
		for e := range entities {
			entity := fmt.Sprintf("e%d", e)
			id := fmt.Sprintf("%s-c%d", entity, i)
			m := natsCommand(lay.IntakeSubject(), entity, "add:1", "Nats-Msg-Id", id, intake.HeaderReplyTo, "my.replies")
			ack, err := publish(t, s.js, m)
			if err != nil || ack.Duplicate {
				t.Fatalf("publish %s: %v %v", id, ack, err)
			}
			ids[entity] = append(ids[entity], id)
			if ack, err := publish(t, s.js, m); err != nil || !ack.Duplicate { // a producer's retry
				t.Fatalf("duplicate %s: %+v %v", id, ack, err)
			}
		}
	}
	// A rejected command in the middle of e0: kept with its error; e0 goes on after it.
	if _, err := publish(t, s.js, natsCommand(lay.IntakeSubject(), "e0", "bad", "Nats-Msg-Id", "e0-bad")); err != nil {
		t.Fatal(err)
	}
	ids["e0"] = append(ids["e0"], "e0-bad")
	for i := range 3 {
		id := fmt.Sprintf("e0-after-%d", i)
		if _, err := publish(t, s.js, natsCommand(lay.IntakeSubject(), "e0", "add:1", "Nats-Msg-Id", id)); err != nil {
			t.Fatal(err)
		}
		ids["e0"] = append(ids["e0"], id)
	}
	// 20 commands wait: the intake is full.
	if _, err := publish(t, s.js, natsCommand(lay.IntakeSubject(), "e9", "add:1", "Nats-Msg-Id", "overflow")); err == nil ||
		!strings.Contains(err.Error(), "maximum messages") {
		t.Fatalf("publish to a full intake: %v", err)
	}
	st := intakeStatus(t, s)
	if st.GetPending()+st.GetInProgress() != 20 || st.GetLastSequence() != 20 || st.GetOldestPending() == nil || st.GetMaxMessages() != 20 {
		t.Fatalf("status without workers %v", st)
	}
	if out.count() != 0 {
		t.Fatalf("outcomes before any worker: %d", out.count())
	}

	s.workers = append(s.workers, costest.StartNode(t, s.cfg, node.Roles{Worker: true}))
	costest.Eventually(t, 30*time.Second, "every outcome", func() bool { return out.count() == 20 })
	for entity, want := range ids {
		applied := costest.CommandIDs(t, s.js, entity, s.cfg.NumShards)
		var ok []string
		for _, id := range want {
			if id != "e0-bad" {
				ok = append(ok, id)
			}
		}
		if strings.Join(applied, ",") != strings.Join(ok, ",") {
			t.Errorf("%s applied %v, accepted %v", entity, applied, ok)
		}
		for _, id := range want {
			got := out.get(id)
			if len(got) != 1 {
				t.Errorf("%s: %d outcomes", id, len(got))
				continue
			}
			if id == "e0-bad" {
				if got[0].GetError().GetCode() != int32(codes.InvalidArgument) || got[0].GetCommand().GetTypeUrl() == "" {
					t.Errorf("rejected outcome %v", got[0])
				}
			} else if got[0].GetResponse() == nil || got[0].GetIntakeSequence() == 0 || got[0].GetAcceptedAt() == nil {
				t.Errorf("%s outcome %v", id, got[0])
			}
		}
	}
	// The reply subject heard each command that asked for it.
	for range entities * per {
		m, err := replies.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("reply subject: %v", err)
		}
		if m.Header.Get(intake.HeaderStatus) != "0" {
			t.Fatalf("reply %v", m.Header)
		}
	}
	costest.Eventually(t, 10*time.Second, "an empty intake", func() bool {
		st := intakeStatus(t, s)
		return st.GetPending() == 0 && st.GetInProgress() == 0 && st.GetStoredMessages() == 0
	})
	// Outcomes are kept in the outcome stream, rejected commands with their error.
	msg, err := s.js.Stream(context.Background(), lay.OutcomeStream())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(context.Background(), lay.OutcomeLogSubject("e0-bad"))
	if err != nil {
		t.Fatal(err)
	}
	var kept natspb.CommandOutcome
	if err := proto.Unmarshal(raw.Data, &kept); err != nil || kept.GetError().GetMessage() != "bad command" {
		t.Fatalf("kept outcome %v: %v", &kept, err)
	}
}

func intakeStatus(t *testing.T, s *system) *natspb.GetIntakeStatusResponse {
	t.Helper()
	conn := costest.Conn(t, s.gateway.GRPCAddr)
	st, err := natspb.NewIntakeServiceClient(conn).GetIntakeStatus(context.Background(), &natspb.GetIntakeStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}
