package bench

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/node"
)

// SlowHandler is a write handler with a fixed capacity: at most Parallel calls at once, each taking
// Delay. Offered more, a worker must hold the commands that wait.
type SlowHandler struct {
	cospb.UnimplementedWriteSideHandlerServiceServer
	Delay time.Duration
	sem   chan struct{}
}

// NewSlowHandler builds a handler that serves parallel calls at once.
func NewSlowHandler(delay time.Duration, parallel int) *SlowHandler {
	return &SlowHandler{Delay: delay, sem: make(chan struct{}, parallel)}
}

// HandleCommand implements the write handler: one small event, after waiting for capacity.
func (h *SlowHandler) HandleCommand(ctx context.Context, _ *cospb.HandleCommandRequest) (*cospb.HandleCommandResponse, error) {
	select {
	case h.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-h.sem }()
	t := time.NewTimer(h.Delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &cospb.HandleCommandResponse{Events: []*anypb.Any{smallEvent}}, nil
}

// HandleEvent implements the write handler.
func (*SlowHandler) HandleEvent(_ context.Context, req *cospb.HandleEventRequest) (*cospb.HandleEventResponse, error) {
	return &cospb.HandleEventResponse{ResultingState: req.GetEvent()}, nil
}

// bigCommand is a command of about n bytes (the handler ignores its content).
func bigCommand(n int) *anypb.Any {
	a, _ := anypb.New(wrapperspb.Bytes(make([]byte, n)))
	return a
}

// overload measures a worker in its own process offered far more than it can do: with the default
// bound on what it holds (COS_WORKER_MAX_PENDING_BYTES), with one hot entity (COS_WORKER_MAX_ENTITY_QUEUE),
// and, for contrast, with the bound lifted. It reports the worker's peak resident memory and how the
// commands were answered.
func overload(ctx context.Context, o Options) ([]Result, error) {
	dir := filepath.Join(o.Dir, "overload")
	url, _, stopNATS, err := o.ChildNATS(dir)
	if err != nil {
		return nil, err
	}
	defer stopNATS()
	h := NewSlowHandler(time.Millisecond, 4) // at most 4,000 commands/s, about 2,400/s measured
	handler, stopHandler, err := serveGRPC(func(s *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(s, h) })
	if err != nil {
		return nil, err
	}
	defer stopHandler()
	host, port, _ := net.SplitHostPort(handler)
	base := []string{"COS_NATS_URL=" + url, "COS_WRITE_SIDE_HOST=" + host, "COS_WRITE_SIDE_PORT=" + port,
		"COS_METRICS_ADDRESS=", "LOG_LEVEL=ERROR", "COS_COMMAND_HANDLER_TIMEOUT=5"}
	cfg, _, err := config.FromEnv(append(append([]string(nil), base...), o.Env...))
	if err != nil {
		return nil, err
	}
	gw, stopGW, err := runNode(ctx, cfg, node.Roles{Gateway: true})
	if err != nil {
		return nil, err
	}
	defer stopGW()
	client, closeClient, err := dialClient(gw.GRPCAddr)
	if err != nil {
		return nil, err
	}
	defer closeClient()

	const size = 32 << 10
	cmd := bigCommand(size)
	var out []Result
	for _, v := range []struct {
		variant  string
		env      []string
		entities int
	}{
		{"bounded (64 MiB default), 10,000 entities", nil, 10000},
		{"bounded, one hot entity", nil, 1},
		{"bound lifted (16 GiB), 10,000 entities", []string{"COS_WORKER_MAX_PENDING_BYTES=17179869184", "COS_WORKER_MAX_ENTITY_QUEUE=100000"}, 10000},
	} {
		pid, stopWorker, err := o.ChildWorker(append(append(append([]string(nil), base...), o.Env...), v.env...))
		if err != nil {
			return nil, err
		}
		var peak atomic.Int64
		sample, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				if mib := rssMiB(pid); int64(mib) > peak.Load() {
					peak.Store(int64(mib))
				}
				select {
				case <-sample:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		var mu sync.Mutex
		answers := map[string]int64{}
		prefix := fmt.Sprintf("o%d-", len(out))
		res := OpenLoop(ctx, "Worker under overload (32 KiB commands at 6,000/s)", v.variant, 6000, 4096, o.Duration,
			func(ctx context.Context, _ int, seq int64) error {
				id := fmt.Sprint(prefix, seq%int64(v.entities))
				_, err := client.ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: id, Command: cmd})
				key := status.Code(err).String()
				if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable && strings.Contains(st.Message(), "not processed") {
					key = "refused"
				}
				mu.Lock()
				answers[key]++
				mu.Unlock()
				return err
			})
		close(sample)
		<-done
		idle := rssMiB(pid)
		stopWorker()
		res.Extra = map[string]float64{"worker_peak_rss_mib": float64(peak.Load()), "worker_rss_after_mib": idle}
		for k, n := range answers {
			res.Extra["answers_"+strings.ToLower(k)] = float64(n)
		}
		res.Note = "errors are refusals (UNAVAILABLE, not processed) and deadlines; the worker is its own process"
		out = append(out, res)
		o.Log("%-58s %-44s worker peak RSS %5d MiB; answers %v", res.Scenario, res.Variant, peak.Load(), answers)
	}
	return out, nil
}
