package gateway_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/layout"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixedPlacement names one owner for every entity and records the workers reported down.
type fixedPlacement struct {
	owner string
	mu    sync.Mutex
	down  []string
}

func (p *fixedPlacement) Owner(string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.owner, p.owner != ""
}

func (p *fixedPlacement) Down(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = append(p.down, id)
	p.owner = ""
}

// replier answers every command on subject with the subject it arrived on.
func replier(t *testing.T, nc *nats.Conn, subject, queue string) {
	t.Helper()
	sub, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		b, _ := proto.Marshal(&natspb.CommandReply{Outcome: &natspb.CommandReply_Response{Response: &cospb.ProcessCommandResponse{
			Meta: &cospb.MetaData{EntityId: m.Subject}}}})
		_ = m.Respond(b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A command goes to its owner's own subject; when the owner has no responder (it died with its
// connection) it goes to the queue group at once and the owner is reported down.
func TestDispatchRoutesToOwnerAndFallsBack(t *testing.T) {
	srv := costest.StartNATS(t)
	nc, _ := costest.JetStream(t, srv)
	lay := layout.Default()
	replier(t, nc, lay.CommandSubjects(), lay.WorkerQueue())
	replier(t, nc, lay.WorkerCommandSubjects("w-live"), "")
	p := &fixedPlacement{owner: "w-live"}
	d := gateway.NATSDispatcher{Conn: nc, Template: lay.CommandSubjects(), Layout: lay, Placement: p}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &natspb.CommandRequest{EntityId: "acc-1", CommandId: "c1"}

	reply, err := d.Dispatch(ctx, "cos.cmd.3.acc-1", req)
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.GetResponse().GetMeta().GetEntityId(); got != "cos.wcmd.w-live.3.acc-1" {
		t.Fatalf("the owned command arrived on %q", got)
	}

	p.owner = "w-gone"
	reply, err = d.Dispatch(ctx, "cos.cmd.3.acc-1", req)
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.GetResponse().GetMeta().GetEntityId(); got != "cos.cmd.3.acc-1" {
		t.Fatalf("with its owner gone the command arrived on %q, want the queue group's subject", got)
	}
	if len(p.down) != 1 || p.down[0] != "w-gone" {
		t.Fatalf("workers reported down: %v", p.down)
	}
}

// localDispatcher stands for the worker in the gateway's process.
type localDispatcher struct{ calls int }

func (l *localDispatcher) Dispatch(_ context.Context, subject string, _ *natspb.CommandRequest) (*natspb.CommandReply, error) {
	l.calls++
	return &natspb.CommandReply{Outcome: &natspb.CommandReply_Response{Response: &cospb.ProcessCommandResponse{
		Meta: &cospb.MetaData{EntityId: "local:" + subject}}}}, nil
}

// With a worker in the process, it takes the entities it owns and, when no worker is known or the
// owner is gone, every command; another live owner still gets its entities over NATS.
func TestDispatchWithALocalWorker(t *testing.T) {
	srv := costest.StartNATS(t)
	nc, _ := costest.JetStream(t, srv)
	lay := layout.Default()
	replier(t, nc, lay.WorkerCommandSubjects("w-other"), "")
	local := &localDispatcher{}
	p := &fixedPlacement{}
	d := gateway.NATSDispatcher{Conn: nc, Template: lay.CommandSubjects(), Layout: lay, Placement: p, Local: local, LocalID: "w-self"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &natspb.CommandRequest{EntityId: "acc-1", CommandId: "c1"}
	for _, c := range []struct{ owner, want string }{
		{"", "local:cos.cmd.3.acc-1"},
		{"w-self", "local:cos.cmd.3.acc-1"},
		{"w-other", "cos.wcmd.w-other.3.acc-1"},
		{"w-gone", "local:cos.cmd.3.acc-1"},
	} {
		p.owner = c.owner
		reply, err := d.Dispatch(ctx, "cos.cmd.3.acc-1", req)
		if err != nil {
			t.Fatalf("owner %q: %v", c.owner, err)
		}
		if got := reply.GetResponse().GetMeta().GetEntityId(); got != c.want {
			t.Errorf("owner %q: arrived at %q, want %q", c.owner, got, c.want)
		}
	}
	if local.calls != 3 {
		t.Errorf("local worker took %d commands, want 3", local.calls)
	}
}
