package subscription_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	bankpb "github.com/cosnats/cosnats/examples/bankaccount/gen/bankaccount/v1"
	"github.com/cosnats/cosnats/examples/bankaccount/writeside"
	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/node"
)

// bank is a running chief-of-state (embedded NATS, gateway, worker) with the bank-account example as
// its write handler, as the quickstart runs it.
type bank struct {
	t      *testing.T
	cfg    config.Config
	node   *costest.Node
	client cospb.ChiefOfStateServiceClient
	js     jetstream.JetStream
}

// bankConfig is the configuration of a node using the example handler, from the environment variables
// given (on top of costest's).
func bankConfig(t *testing.T, env ...string) config.Config {
	t.Helper()
	port := costest.ServeGRPC(t, writeside.New().Register)
	base := []string{
		"COS_WRITE_SIDE_HOST=127.0.0.1",
		"COS_WRITE_SIDE_PORT=" + strconv.Itoa(port),
		"COS_DATA_DIR=" + t.TempDir(),
		"COS_METRICS_ADDRESS=127.0.0.1:0",
	}
	if !strings.Contains(strings.Join(env, "\n"), "COS_NATS_URL=") {
		base = append(base, "COS_NATS_LISTEN=127.0.0.1:0") // the test reads the stream over TCP
	}
	cfg, _, err := config.FromEnv(append(base, env...))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func startBank(t *testing.T, cfg config.Config) *bank {
	t.Helper()
	n := costest.StartNode(t, cfg, node.Roles{})
	nc, err := nats.Connect(n.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &bank{t: t, cfg: cfg, node: n, client: costest.Client(t, n.GRPCAddr), js: js}
}

// do runs one command and fails the test unless it succeeds.
func (b *bank) do(client cospb.ChiefOfStateServiceClient, id string, cmd proto.Message) *cospb.ProcessCommandResponse {
	b.t.Helper()
	a, err := anypb.New(cmd)
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err := client.ProcessCommand(context.Background(), &cospb.ProcessCommandRequest{EntityId: id, Command: a})
	if err != nil {
		b.t.Errorf("ProcessCommand(%s, %v): %v", id, cmd, err)
		return nil
	}
	return resp
}

// stored reads the event at a stream sequence and checks it is the entity's event with this meta.
func (b *bank) checkStored(seq uint64, meta *cospb.MetaData) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, layout.Default().EventStream())
	if err != nil {
		b.t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		b.t.Fatalf("read sequence %d: %v", seq, err)
	}
	key, _ := entity.NewKey(meta.GetEntityId(), b.cfg.NumShards)
	var w cospb.EventWrapper
	if err := proto.Unmarshal(m.Data, &w); err != nil || m.Subject != layout.Default().EventSubject(key) || !proto.Equal(w.GetMeta(), meta) {
		b.t.Fatalf("sequence %d holds %s %v, the subscription said %v (%v)", seq, m.Subject, w.GetMeta(), meta, err)
	}
}

// consumers is the number of consumers on the event stream (each subscription has one).
func (b *bank) consumers() int {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := b.js.Stream(ctx, layout.Default().EventStream())
	if err != nil {
		b.t.Fatal(err)
	}
	return s.CachedInfo().State.Consumers
}

// uuid is a random version-4 UUID, the kind of subscription id COS clients generate.
func uuid(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// live waits until the gateway says the subscription reads the stream, and returns its id.
func live(t *testing.T, stream grpc.ClientStream) string {
	t.Helper()
	md, err := stream.Header()
	if err != nil {
		t.Fatalf("subscription did not start: %v", err)
	}
	ids := md.Get(gateway.SubscriptionIDKey)
	if len(ids) != 1 || ids[0] == "" {
		t.Fatalf("header %s = %q", gateway.SubscriptionIDKey, ids)
	}
	return ids[0]
}

// recvN receives n events.
func recvN[R any](t *testing.T, stream grpc.ServerStreamingClient[R], n int) []*R {
	t.Helper()
	out := make([]*R, 0, n)
	for range n {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, r)
	}
	return out
}

// wantEnd fails unless the stream's next answer is its end with this code (io.EOF for OK) and a
// message matching re, and returns the message.
func wantEnd[R any](t *testing.T, stream grpc.ServerStreamingClient[R], code codes.Code, re string) string {
	t.Helper()
	r, err := stream.Recv()
	if err == nil {
		t.Fatalf("an event %v, want the stream's end (%s)", r, code)
	}
	if code == codes.OK {
		if !errors.Is(err, io.EOF) {
			t.Fatalf("got %v, want io.EOF", err)
		}
		return ""
	}
	st := status.Convert(err)
	if st.Code() != code || !regexp.MustCompile(re).MatchString(st.Message()) {
		t.Fatalf("got %s %q, want %s matching %q", st.Code(), st.Message(), code, re)
	}
	return st.Message()
}

// The COS sample's client: SubscribeAll with its own id, commands for several entities, every event in
// order per entity with its id, event, state, meta and position, then UnsubscribeAll ends the stream.
func TestSubscribeAllLikeTheCOSSample(t *testing.T) {
	b := startBank(t, bankConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()
	id := uuid(t)
	stream, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got := live(t, stream); got != id {
		t.Fatalf("header id %q, want %q", got, id)
	}

	accounts := []string{"acc-1", "acc-2", "acc 3/with.dots"}
	commands := []proto.Message{&bankpb.OpenAccount{Owner: "o", InitialBalance: 100}, &bankpb.Credit{Amount: 10},
		&bankpb.Debit{Amount: 5}, &bankpb.Credit{Amount: 7}}
	events := []proto.Message{&bankpb.AccountOpened{Owner: "o", InitialBalance: 100}, &bankpb.AccountCredited{Amount: 10},
		&bankpb.AccountDebited{Amount: 5}, &bankpb.AccountCredited{Amount: 7}}
	replies := make(map[string][]*cospb.ProcessCommandResponse)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, acc := range accounts {
		wg.Go(func() {
			for _, c := range commands {
				r := b.do(b.client, acc, c)
				mu.Lock()
				replies[acc] = append(replies[acc], r)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	got := recvN(t, stream, len(accounts)*len(commands))
	seen := map[string]int{}
	var last uint64
	for _, r := range got {
		acc := r.GetMeta().GetEntityId()
		i := seen[acc]
		seen[acc]++
		if i >= len(commands) {
			t.Fatalf("unexpected event %v", r)
		}
		want := replies[acc][i]
		if r.GetSubscriptionId() != id || r.GetMeta().GetRevisionNumber() != uint32(i+1) ||
			!proto.Equal(r.GetMeta(), want.GetMeta()) || !proto.Equal(r.GetResultingState(), want.GetState()) {
			t.Fatalf("event %d of %s: %v, want id %s and the command's reply %v", i+1, acc, r, id, want)
		}
		ev, err := r.GetEvent().UnmarshalNew()
		if err != nil || !proto.Equal(ev, events[i]) {
			t.Fatalf("event %d of %s is %v, want %v (%v)", i+1, acc, ev, events[i], err)
		}
		if r.GetSequence() <= last {
			t.Fatalf("sequence %d after %d: not in stream order", r.GetSequence(), last)
		}
		last = r.GetSequence()
		b.checkStored(r.GetSequence(), r.GetMeta())
	}

	if _, err := b.client.UnsubscribeAll(context.Background(), &cospb.UnsubscribeAllRequest{SubscriptionId: id}); err != nil {
		t.Fatal(err)
	}
	wantEnd(t, stream, codes.OK, "")
	// Idempotent: nothing left with that id, still OK.
	if _, err := b.client.UnsubscribeAll(context.Background(), &cospb.UnsubscribeAllRequest{SubscriptionId: id}); err != nil {
		t.Fatal(err)
	}
}

// Subscribe follows one entity only; from_revision replays from that revision, then goes on live.
func TestSubscribeOneEntity(t *testing.T) {
	b := startBank(t, bankConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()
	alice, err := b.client.Subscribe(ctx, &cospb.SubscribeRequest{EntityId: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	id := live(t, alice) // generated
	b.do(b.client, "alice", &bankpb.OpenAccount{Owner: "alice", InitialBalance: 10})
	b.do(b.client, "bob", &bankpb.OpenAccount{Owner: "bob", InitialBalance: 10})
	b.do(b.client, "alice", &bankpb.Credit{Amount: 5})
	b.do(b.client, "bob", &bankpb.Credit{Amount: 5})
	third := b.do(b.client, "alice", &bankpb.Debit{Amount: 1})
	got := recvN(t, alice, 3)
	for i, r := range got {
		if r.GetSubscriptionId() != id || r.GetMeta().GetEntityId() != "alice" || r.GetMeta().GetRevisionNumber() != uint32(i+1) {
			t.Fatalf("event %d: %v", i, r)
		}
		b.checkStored(r.GetSequence(), r.GetMeta())
	}
	if !proto.Equal(got[2].GetResultingState(), third.GetState()) {
		t.Fatalf("state %v, want %v", got[2].GetResultingState(), third.GetState())
	}

	// Resume from revision 2: the stored events 2 and 3, then the next one live.
	resumed, err := b.client.Subscribe(ctx, &cospb.SubscribeRequest{EntityId: "alice", SubscriptionId: "resumed", FromRevision: 2})
	if err != nil {
		t.Fatal(err)
	}
	if live(t, resumed) != "resumed" {
		t.Fatal("header id is not the request's")
	}
	replay := recvN(t, resumed, 2)
	for i, r := range replay {
		if r.GetSubscriptionId() != "resumed" || !proto.Equal(r.GetMeta(), got[i+1].GetMeta()) || r.GetSequence() != got[i+1].GetSequence() {
			t.Fatalf("replayed %v, want %v", r, got[i+1])
		}
	}
	fourth := b.do(b.client, "alice", &bankpb.Credit{Amount: 9})
	for _, s := range []grpc.ServerStreamingClient[cospb.SubscribeResponse]{alice, resumed} {
		r := recvN(t, s, 1)[0]
		if r.GetMeta().GetRevisionNumber() != 4 || !proto.Equal(r.GetMeta(), fourth.GetMeta()) {
			t.Fatalf("live event %v, want revision 4", r)
		}
	}

	// Bad input.
	bad, err := b.client.Subscribe(ctx, &cospb.SubscribeRequest{})
	if err == nil {
		wantEnd(t, bad, codes.InvalidArgument, "^empty entity ID$")
	}
	badID, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "tab\tid"})
	if err == nil {
		wantEnd(t, badID, codes.InvalidArgument, "printable ASCII")
	}
	_, err = b.client.Unsubscribe(ctx, &cospb.UnsubscribeRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Unsubscribe without an id: %v", err)
	}
	_, err = b.client.UnsubscribeAll(ctx, &cospb.UnsubscribeAllRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("UnsubscribeAll without an id: %v", err)
	}
}

// SubscribeAll with from_sequence = a response's sequence + 1 continues right after it: no gap, no
// duplicate, then live.
func TestSubscribeAllResumesFromSequence(t *testing.T) {
	b := startBank(t, bankConfig(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()
	first, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "first"})
	if err != nil {
		t.Fatal(err)
	}
	live(t, first)
	for i := range 3 {
		acc := fmt.Sprint("r-", i)
		b.do(b.client, acc, &bankpb.OpenAccount{Owner: acc, InitialBalance: 1})
		b.do(b.client, acc, &bankpb.Credit{Amount: 2})
	}
	all := recvN(t, first, 6)
	after := all[2].GetSequence()

	second, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "second", FromSequence: after + 1})
	if err != nil {
		t.Fatal(err)
	}
	live(t, second)
	for i, r := range recvN(t, second, 3) {
		want := all[3+i]
		if r.GetSequence() != want.GetSequence() || !proto.Equal(r.GetMeta(), want.GetMeta()) || !proto.Equal(r.GetEvent(), want.GetEvent()) {
			t.Fatalf("resumed event %d: %v, want %v", i, r, want)
		}
	}
	b.do(b.client, "r-0", &bankpb.Debit{Amount: 1})
	a, s := recvN(t, first, 1)[0], recvN(t, second, 1)[0]
	if a.GetSequence() != s.GetSequence() || !proto.Equal(a.GetMeta(), s.GetMeta()) || s.GetMeta().GetRevisionNumber() != 3 {
		t.Fatalf("live event: %v and %v", a, s)
	}
}

// An Unsubscribe received by another gateway ends the stream this one serves; Unsubscribe ends only
// Subscribe streams and UnsubscribeAll only SubscribeAll streams, even with the same id.
func TestUnsubscribeThroughAnotherGateway(t *testing.T) {
	a := startBank(t, bankConfig(t))
	cfgB := a.cfg
	cfgB.NATS.URL, cfgB.NATS.Listen = a.node.NATSURL, ""
	gwB := costest.StartNode(t, cfgB, node.Roles{Gateway: true})
	clientB := costest.Client(t, gwB.GRPCAddr)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()
	id := uuid(t)
	one, err := a.client.Subscribe(ctx, &cospb.SubscribeRequest{EntityId: "acc", SubscriptionId: id})
	if err != nil {
		t.Fatal(err)
	}
	live(t, one)
	all, err := a.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: id})
	if err != nil {
		t.Fatal(err)
	}
	live(t, all)

	if _, err := clientB.Unsubscribe(ctx, &cospb.UnsubscribeRequest{SubscriptionId: id}); err != nil {
		t.Fatal(err)
	}
	wantEnd(t, one, codes.OK, "")
	// The SubscribeAll stream with the same id still runs; a command through gateway B reaches it.
	resp := a.do(clientB, "acc", &bankpb.OpenAccount{Owner: "x", InitialBalance: 1})
	if r := recvN(t, all, 1)[0]; !proto.Equal(r.GetMeta(), resp.GetMeta()) {
		t.Fatalf("got %v, want %v", r, resp)
	}
	if _, err := clientB.UnsubscribeAll(ctx, &cospb.UnsubscribeAllRequest{SubscriptionId: id}); err != nil {
		t.Fatal(err)
	}
	wantEnd(t, all, codes.OK, "")
	if _, err := clientB.Unsubscribe(ctx, &cospb.UnsubscribeRequest{SubscriptionId: "nobody"}); err != nil {
		t.Fatalf("unsubscribing an unknown id: %v", err)
	}
}

// A subscriber that stops reading is cut off with RESOURCE_EXHAUSTED (saying where to resume) once its
// small buffer stays full, while another subscriber and the commands go on.
func TestSlowSubscriberIsCutOff(t *testing.T) {
	b := startBank(t, bankConfig(t, "COS_SUBSCRIPTION_BUFFER=1", "COS_SUBSCRIPTION_STALL_TIMEOUT=50"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()

	// A fixed 64 KiB flow-control window (no dynamic growth), so that a client that does not read
	// blocks the gateway's sends after a few large events.
	conn, err := grpc.NewClient(b.node.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	slow, err := cospb.NewChiefOfStateServiceClient(conn).SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	live(t, slow)
	fast, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{SubscriptionId: "fast"})
	if err != nil {
		t.Fatal(err)
	}
	live(t, fast)
	received := make(chan *cospb.SubscribeAllResponse, 100)
	var reader sync.WaitGroup
	reader.Go(func() {
		for {
			r, err := fast.Recv()
			if err != nil {
				return
			}
			received <- r
		}
	})
	if n := b.consumers(); n != 2 {
		t.Fatalf("%d consumers, want one per subscription", n)
	}

	// Events of about 200 KB each (the owner is in the event and in the state).
	owner := strings.Repeat("x", 100<<10)
	const before, after = 8, 4
	for i := range before {
		b.do(b.client, fmt.Sprint("big-", i), &bankpb.OpenAccount{Owner: owner, InitialBalance: 1})
	}
	// Cut off: its consumer is released.
	costest.Eventually(t, 30*time.Second, "the slow subscription's end", func() bool { return b.consumers() == 1 })
	for i := range after {
		b.do(b.client, fmt.Sprint("big-", i), &bankpb.Credit{Amount: 1})
	}
	var last uint64
	for i := range before + after {
		select {
		case r := <-received:
			if r.GetSequence() <= last {
				t.Fatalf("fast subscriber: sequence %d after %d", r.GetSequence(), last)
			}
			last = r.GetSequence()
		case <-time.After(30 * time.Second):
			t.Fatalf("the fast subscriber got %d of %d events", i, before+after)
		}
	}

	// The slow client reads at last: what was sent before the cut-off, then the status.
	var got []uint64
	var end error
	for {
		r, err := slow.Recv()
		if err != nil {
			end = err
			break
		}
		got = append(got, r.GetSequence())
	}
	st := status.Convert(end)
	m := regexp.MustCompile(`^subscriber too slow: .*; resume from sequence (\d+)$`).FindStringSubmatch(st.Message())
	if st.Code() != codes.ResourceExhausted || m == nil {
		t.Fatalf("slow subscriber ended with %v", end)
	}
	resume, _ := strconv.ParseUint(m[1], 10, 64)
	if len(got) == 0 || len(got) >= before {
		t.Fatalf("the slow subscriber received %d events before the cut-off", len(got))
	}
	// Resuming there loses nothing (the one event in flight at the cut-off may come again).
	if lastGot := got[len(got)-1]; resume != lastGot+1 && resume != lastGot {
		t.Fatalf("resume from %d after receiving up to %d", resume, lastGot)
	}
	cancel()
	reader.Wait()
}

// Stopping the gateway ends every open stream with UNAVAILABLE and where to resume, without waiting
// for the shutdown timeout.
func TestShutdownEndsStreams(t *testing.T) {
	b := startBank(t, bankConfig(t, "COS_SHUTDOWN_TIMEOUT=3600"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not blocks
	defer cancel()
	all, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	live(t, all)
	one, err := b.client.Subscribe(ctx, &cospb.SubscribeRequest{EntityId: "acc"})
	if err != nil {
		t.Fatal(err)
	}
	live(t, one)
	b.do(b.client, "acc", &bankpb.OpenAccount{Owner: "o", InitialBalance: 1})
	seq := recvN(t, all, 1)[0].GetSequence()
	recvN(t, one, 1)
	// Nothing received yet: they resume from where they started.
	idleAll, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	live(t, idleAll)
	idleOne, err := b.client.Subscribe(ctx, &cospb.SubscribeRequest{EntityId: "acc"})
	if err != nil {
		t.Fatal(err)
	}
	live(t, idleOne)

	stopped := make(chan error, 1)
	go func() { stopped <- b.node.Stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the gateway did not stop: open subscriptions hold it")
	}
	next := strconv.FormatUint(seq+1, 10)
	wantEnd(t, all, codes.Unavailable, "^gateway shutting down; resume from sequence "+next+"$")
	wantEnd(t, idleAll, codes.Unavailable, "^gateway shutting down; resume from sequence "+next+"$")
	wantEnd(t, one, codes.Unavailable, "^gateway shutting down; resume from revision 2$")
	wantEnd(t, idleOne, codes.Unavailable, "^gateway shutting down; resume from revision 2$")
}

// With COS_SUBSCRIPTION_ENABLED=false the four RPCs answer as COS does when subscriptions are off.
func TestSubscriptionsDisabled(t *testing.T) {
	b := startBank(t, bankConfig(t, "COS_SUBSCRIPTION_ENABLED=false"))
	ctx := context.Background()
	const msg = "^Subscription is not enabled; configure subscription to use streaming$"
	one, err := b.client.Subscribe(ctx, &cospb.SubscribeRequest{EntityId: "acc"})
	if err != nil {
		t.Fatal(err)
	}
	wantEnd(t, one, codes.Unimplemented, msg)
	all, err := b.client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantEnd(t, all, codes.Unimplemented, msg)
	if _, err := b.client.Unsubscribe(ctx, &cospb.UnsubscribeRequest{SubscriptionId: "x"}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("Unsubscribe: %v", err)
	}
	if _, err := b.client.UnsubscribeAll(ctx, &cospb.UnsubscribeAllRequest{SubscriptionId: "x"}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("UnsubscribeAll: %v", err)
	}
}

// A gateway still waiting for NATS answers UNAVAILABLE, as it does for commands.
func TestBeforeNATSIsReachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	cfg := bankConfig(t, "COS_NATS_URL=nats://"+addr)
	r := costest.Launch(t, cfg, node.Options{Roles: node.Roles{Gateway: true}})
	client := costest.Client(t, r.Addrs.GRPCAddr)
	ctx := context.Background()
	all, err := client.SubscribeAll(ctx, &cospb.SubscribeAllRequest{})
	if err != nil {
		t.Fatal(err)
	}
	wantEnd(t, all, codes.Unavailable, "not connected to NATS JetStream yet")
	if _, err := client.UnsubscribeAll(ctx, &cospb.UnsubscribeAllRequest{SubscriptionId: "x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("UnsubscribeAll: %v", err)
	}
}
