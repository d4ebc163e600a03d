package readside_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	bankv1 "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/examples/bankaccount/readside"
	cosv1 "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

const readSideID = "balances"

// syncBuffer is a log sink the server goroutines write to while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture serves a real Handler on a loopback port and dials it, as
// chief-of-state would.
type fixture struct {
	t      *testing.T
	h      *readside.Handler
	client cosv1.ReadSideHandlerServiceClient
	logs   *syncBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	logs := &syncBuffer{}
	h := readside.New(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	h.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &fixture{t: t, h: h, client: cosv1.NewReadSideHandlerServiceClient(conn), logs: logs}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// event builds the request chief-of-state sends for one persisted event of
// account id: the event, the resulting state and the meta.
func (f *fixture) event(id string, rev uint32, ev, state proto.Message) *cosv1.HandleReadSideRequest {
	req := &cosv1.HandleReadSideRequest{
		Event:      mustAny(f.t, ev),
		Meta:       &cosv1.MetaData{EntityId: id, RevisionNumber: rev},
		ReadSideId: readSideID,
	}
	if state != nil {
		req.State = mustAny(f.t, state)
	}
	return req
}

func (f *fixture) account(id string, rev uint32, ev proto.Message, balance int64) *cosv1.HandleReadSideRequest {
	return f.event(id, rev, ev, &bankv1.BankAccount{AccountId: id, Owner: "Ann", Balance: balance})
}

// send delivers req with the metadata chief-of-state sets and returns
// Successful.
func (f *fixture) send(req *cosv1.HandleReadSideRequest, tag int) bool {
	f.t.Helper()
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		"x-cos-entity-id", req.GetMeta().GetEntityId(),
		"x-cos-event-tag", strconv.Itoa(tag))
	resp, err := f.client.HandleReadSide(ctx, req)
	if err != nil {
		f.t.Fatalf("HandleReadSide(%s rev %d): %v", req.GetMeta().GetEntityId(), req.GetMeta().GetRevisionNumber(), err)
	}
	return resp.GetSuccessful()
}

func (f *fixture) wantBalance(id string, balance int64, rev uint32) {
	f.t.Helper()
	gotBal, gotRev, ok := f.h.Balance(id)
	if !ok || gotBal != balance || gotRev != rev {
		f.t.Errorf("Balance(%q) = %d, rev %d, ok %v; want %d, rev %d, true", id, gotBal, gotRev, ok, balance, rev)
	}
}

func (f *fixture) wantCounts(events, gaps int) {
	f.t.Helper()
	if got := f.h.Events(); got != events {
		f.t.Errorf("Events() = %d, want %d", got, events)
	}
	if got := f.h.Gaps(); got != gaps {
		f.t.Errorf("Gaps() = %d, want %d", got, gaps)
	}
}

func TestAppliesEventsInOrder(t *testing.T) {
	f := newFixture(t)
	// COS allows spaces, dots and slashes in ids. (Not non-ASCII here: gRPC
	// metadata values must be printable ASCII, so x-cos-entity-id could not
	// carry such an id as is.)
	const acct = "acc 1/a.b"

	if _, _, ok := f.h.Balance(acct); ok {
		t.Fatal("Balance of an unseen account: ok = true")
	}
	steps := []struct {
		ev      proto.Message
		balance int64
	}{
		{&bankv1.AccountOpened{Owner: "Ann", InitialBalance: 1000}, 1000},
		{&bankv1.AccountCredited{Amount: 500}, 1500},
		{&bankv1.AccountDebited{Amount: 200}, 1300},
	}
	for i, s := range steps {
		rev := uint32(i + 1)
		if !f.send(f.account(acct, rev, s.ev, s.balance), 3) {
			t.Fatalf("revision %d: Successful = false", rev)
		}
		f.wantBalance(acct, s.balance, rev)
	}
	if !f.send(f.account("acc-2", 1, &bankv1.AccountOpened{Owner: "Bob", InitialBalance: 7}, 7), 5) {
		t.Fatal("acc-2: Successful = false")
	}
	f.wantBalance("acc-2", 7, 1)
	f.wantBalance(acct, 1300, 3)
	f.wantCounts(4, 0)

	// One line per event with read side, entity, revision, short event type,
	// balance and the shard tag from the metadata.
	logs := f.logs.String()
	for _, want := range []string{
		`msg="readside: event applied" read_side_id=balances entity="acc 1/a.b" revision=2 event=bankaccount.v1.AccountCredited tag=3 balance=1500`,
		`entity=acc-2 revision=1 event=bankaccount.v1.AccountOpened tag=5 balance=7`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "event applied"); n != 4 {
		t.Errorf("%d applied lines, want 4:\n%s", n, logs)
	}
}

func TestDuplicatesAreAcknowledgedAndIgnored(t *testing.T) {
	f := newFixture(t)
	const acct = "acc-1"
	f.send(f.account(acct, 1, &bankv1.AccountOpened{Owner: "Ann", InitialBalance: 100}, 100), 0)
	f.send(f.account(acct, 2, &bankv1.AccountCredited{Amount: 50}, 150), 0)

	// A redelivery of the last revision and of an older one, with states
	// that differ, to prove nothing is overwritten.
	for _, rev := range []uint32{2, 2, 1} {
		if !f.send(f.account(acct, rev, &bankv1.AccountCredited{Amount: 1}, 999), 0) {
			t.Errorf("redelivered revision %d: Successful = false, want true", rev)
		}
	}
	f.wantBalance(acct, 150, 2)
	f.wantCounts(2, 0)

	// The next revision still applies.
	f.send(f.account(acct, 3, &bankv1.AccountDebited{Amount: 30}, 120), 0)
	f.wantBalance(acct, 120, 3)
	f.wantCounts(3, 0)
}

func TestRejectsWhatItCannotApply(t *testing.T) {
	f := newFixture(t)
	const acct = "acc-1"
	open := &bankv1.AccountOpened{Owner: "Ann", InitialBalance: 100}
	cases := map[string]*cosv1.HandleReadSideRequest{
		"Empty state":       f.event(acct, 1, open, &emptypb.Empty{}),
		"event as state":    f.event(acct, 1, open, open),
		"no state":          f.event(acct, 1, open, nil),
		"malformed account": {Event: mustAny(t, open), State: &anypb.Any{TypeUrl: "type.googleapis.com/bankaccount.v1.BankAccount", Value: []byte{0xff}}, Meta: &cosv1.MetaData{EntityId: acct, RevisionNumber: 1}},
		"no meta":           {Event: mustAny(t, open), State: mustAny(t, &bankv1.BankAccount{Balance: 1})},
		"revision 0":        f.account(acct, 0, open, 100),
	}
	for name, req := range cases {
		if f.send(req, 0) {
			t.Errorf("%s: Successful = true, want false", name)
		}
	}
	if _, _, ok := f.h.Balance(acct); ok {
		t.Error("a rejected event reached the projection")
	}
	f.wantCounts(0, 0)
	if logs := f.logs.String(); !strings.Contains(logs, "state is not a BankAccount") ||
		!strings.Contains(logs, "state_type=type.googleapis.com/google.protobuf.Empty") {
		t.Errorf("rejection reason not logged:\n%s", logs)
	}

	// A rejected event does not block the valid one that is redelivered.
	if !f.send(f.account(acct, 1, open, 100), 0) {
		t.Fatal("valid event: Successful = false")
	}
	f.wantBalance(acct, 100, 1)
}

func TestGapIsCountedAndApplied(t *testing.T) {
	f := newFixture(t)
	const acct = "acc-1"
	f.send(f.account(acct, 1, &bankv1.AccountOpened{Owner: "Ann", InitialBalance: 100}, 100), 2)
	if !f.send(f.account(acct, 4, &bankv1.AccountCredited{Amount: 5}, 130), 2) {
		t.Fatal("event after a gap: Successful = false, want true")
	}
	f.wantBalance(acct, 130, 4) // the balance comes from the state, so it is right anyway
	f.wantCounts(2, 1)
	if logs := f.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "missing=2") {
		t.Errorf("gap not logged as a warning:\n%s", logs)
	}

	// The missed revisions arriving late are older: ignored.
	f.send(f.account(acct, 3, &bankv1.AccountCredited{Amount: 10}, 125), 2)
	f.wantBalance(acct, 130, 4)
	f.wantCounts(2, 1)

	// An account first seen past revision 1 is no gap: the projection lives
	// in memory, so after a handler restart chief-of-state resumes mid-stream.
	f.send(f.account("acc-2", 9, &bankv1.AccountCredited{Amount: 1}, 11), 2)
	f.wantBalance("acc-2", 11, 9)
	f.wantCounts(3, 1)
}

// TestConcurrentShards delivers several entities at once, as chief-of-state
// does from different shards; with -race it checks the projection's locking.
func TestConcurrentShards(t *testing.T) {
	f := newFixture(t)
	const accounts, revisions = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, accounts)
	for a := range accounts {
		wg.Go(func() {
			id := fmt.Sprintf("acc-%d", a)
			for rev := uint32(1); rev <= revisions; rev++ {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-cos-entity-id", id, "x-cos-event-tag", strconv.Itoa(a))
				for range 2 { // every event twice: at-least-once delivery
					resp, err := f.client.HandleReadSide(ctx, f.account(id, rev, &bankv1.AccountCredited{Amount: 1}, int64(rev)))
					if err != nil || !resp.GetSuccessful() {
						errs <- fmt.Errorf("%s rev %d: %v, %v", id, rev, resp, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for a := range accounts {
		f.wantBalance(fmt.Sprintf("acc-%d", a), revisions, revisions)
	}
	f.wantCounts(accounts*revisions, 0)
}

// TestMetadataIsInformational checks that meta.entity_id, not the gRPC
// metadata, decides the account: missing metadata is fine, and metadata that
// disagrees is only logged.
func TestMetadataIsInformational(t *testing.T) {
	f := newFixture(t)
	resp, err := f.client.HandleReadSide(context.Background(),
		f.account("acc-1", 1, &bankv1.AccountOpened{Owner: "Ann", InitialBalance: 5}, 5))
	if err != nil || !resp.GetSuccessful() {
		t.Fatalf("without metadata: %v, %v", resp, err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-cos-entity-id", "other", "x-cos-event-tag", "1")
	resp, err = f.client.HandleReadSide(ctx, f.account("acc-1", 2, &bankv1.AccountCredited{Amount: 1}, 6))
	if err != nil || !resp.GetSuccessful() {
		t.Fatalf("with other metadata: %v, %v", resp, err)
	}
	f.wantBalance("acc-1", 6, 2)
	if _, _, ok := f.h.Balance("other"); ok {
		t.Error("metadata entity id used as the account")
	}
	if logs := f.logs.String(); !strings.Contains(logs, "metadata_entity=other") {
		t.Errorf("mismatch not logged:\n%s", logs)
	}
}
