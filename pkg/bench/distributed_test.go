package bench

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/natsembed"
)

// failingHandler fails every command, to check that the front returns the back's gRPC status.
type failingHandler struct {
	cospb.UnimplementedWriteSideHandlerServiceServer
}

func (failingHandler) HandleCommand(context.Context, *cospb.HandleCommandRequest) (*cospb.HandleCommandResponse, error) {
	return nil, status.Error(codes.InvalidArgument, "no such command")
}

// startFloorParts runs one front and backs backs in this process against srv, with handler.
func startFloorParts(t *testing.T, ctx context.Context, url, handler string, backs int) cospb.ChiefOfStateServiceClient {
	t.Helper()
	for i := range backs {
		ready := make(chan string, 1)
		go func() {
			if err := ServeFloorPart(ctx, FloorPart{NATSURL: url, Handler: handler, Backs: backs, Index: i}, func(s string) { ready <- s }); err != nil {
				t.Errorf("back %d: %v", i, err)
			}
		}()
		<-ready
	}
	front := make(chan string, 1)
	go func() {
		if err := ServeFloorPart(ctx, FloorPart{Front: true, NATSURL: url, Backs: backs}, func(s string) { front <- s }); err != nil {
			t.Errorf("front: %v", err)
		}
	}()
	client, closeClient, err := dialClient(<-front)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeClient)
	return client
}

func TestDistributedFloor(t *testing.T) {
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := createFloorStream(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	handler, stop, err := serveGRPC(func(s *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(s, NoopHandler{}) })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	client := startFloorParts(t, ctx, srv.ClientURL(), handler, 2)

	// Each entity's revisions count up across commands, whichever back it hashes to.
	for round := uint32(1); round <= 3; round++ {
		for _, id := range []string{"a", "b", "c", "d"} {
			resp, err := client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: id, Command: Command(1)})
			if err != nil {
				t.Fatalf("%s round %d: %v", id, round, err)
			}
			if got := resp.GetMeta().GetRevisionNumber(); got != round {
				t.Fatalf("%s: revision %d, want %d", id, got, round)
			}
		}
	}
	str, err := js.Stream(ctx, FloorStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 12 {
		t.Fatalf("stream holds %d messages, want 12", info.State.Msgs)
	}

	// A handler's error comes back with its code and message.
	bad, stopBad, err := serveGRPC(func(s *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(s, failingHandler{}) })
	if err != nil {
		t.Fatal(err)
	}
	defer stopBad()
	// On a fresh server, so that these backs do not share the subjects of the ones above.
	srv2, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown()
	failing := startFloorParts(t, ctx, srv2.ClientURL(), bad, 1)
	_, err = failing.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: "a", Command: Command(1)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "no such command") {
		t.Fatalf("got %v, want InvalidArgument: no such command", err)
	}
}

func TestFloorPartEnvRoundTrip(t *testing.T) {
	for _, p := range []FloorPart{
		{Front: true, NATSURL: "nats://127.0.0.1:1,nats://127.0.0.1:2", Backs: 2},
		{NATSURL: "nats://127.0.0.1:1", Handler: "127.0.0.1:3", Backs: 2, Index: 1},
	} {
		env := map[string]string{}
		for _, kv := range p.Env() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		got, err := FloorPartFromEnv(func(k string) string { return env[k] })
		if err != nil || got != p {
			t.Fatalf("round trip of %+v: got %+v, %v", p, got, err)
		}
	}
	if _, err := FloorPartFromEnv(func(k string) string {
		return map[string]string{EnvRole: RoleFloorBack, envFloorBacks: "2", envFloorIndex: "2"}[k]
	}); err == nil {
		t.Fatal("index out of range accepted")
	}
}

func TestProcCPU(t *testing.T) {
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) { // burn some CPU so the reading is above zero
	}
	if d := procCPU(os.Getpid()); d <= 0 {
		t.Fatalf("procCPU of this process = %v, want > 0", d)
	}
	if d := procCPU(-1); d != 0 {
		t.Fatalf("procCPU of no process = %v, want 0", d)
	}
}

func TestFirstLine(t *testing.T) {
	ch := make(chan string, 1)
	w := &firstLine{ch: ch}
	for _, s := range []string{"nats://a", ",nats://b\nrest", "\nmore\n"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-ch; got != "nats://a,nats://b" {
		t.Fatalf("first line %q", got)
	}
}

func TestChildFailsToStart(t *testing.T) {
	ps := &procs{logDir: t.TempDir()}
	defer ps.stop()
	var line string
	_, err := ps.start(context.Background(), "nats", "failing", exec.Command("sh", "-c", "echo boom >&2; exit 3"), readLine(&line))
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("got %v, want the exit status and the log's last lines", err)
	}
}
