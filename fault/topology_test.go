package fault

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/costest"
	"github.com/cosnats/cosnats/pkg/natsperm"
)

// numShards is small so that each shard's consumer sees plenty of events.
const numShards = 4

// server is a gRPC server on a fixed loopback port that can be stopped (the process serving it "dies")
// and started again on the same port.
type server struct {
	port     int
	register func(*grpc.Server)
	mu       sync.Mutex
	srv      *grpc.Server
	done     chan struct{}
}

func (s *server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lis net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger for a moment after a stop
		if lis, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(s.port)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	s.srv = grpc.NewServer()
	s.register(s.srv)
	s.done = make(chan struct{})
	go func(srv *grpc.Server, done chan struct{}) {
		defer close(done)
		_ = srv.Serve(lis)
	}(s.srv, s.done)
	return nil
}

// stop ends the server at once, dropping calls in flight, as a crash does.
func (s *server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		s.srv.Stop()
		<-s.done
		s.srv = nil
	}
}

// topology is the whole system under test.
type topology struct {
	t          *testing.T
	dir        string
	nats       *natsCluster
	handler    *costest.Counter
	handlerSrv *server
	readSide   *costest.Recorder
	readSrv    *server
	gateways   []*proc
	workers    []*proc
	projectors []*proc
	gwAddrs    []string
	// extraGateway makes (not starts) one more gateway, connected to the NATS nodes in natsURL only;
	// it returns the process and its gRPC address.
	extraGateway func(name, natsURL string) (*proc, string)
}

func (tp *topology) ours() []*proc {
	var all []*proc
	all = append(all, tp.gateways...)
	all = append(all, tp.workers...)
	return append(all, tp.projectors...)
}

func (tp *topology) all() []*proc { return append(tp.ours(), tp.nats.nodes...) }

// newTopology prepares everything; start launches it.
func newTopology(t *testing.T) *topology {
	dir := t.TempDir()
	if os.Getenv("COS_FAULT_KEEP") == "1" {
		var err error
		if dir, err = os.MkdirTemp("", "cos-fault-run-"); err != nil {
			t.Fatal(err)
		}
		t.Logf("logs and stores kept in %s", dir)
	}
	tp := &topology{t: t, dir: dir, handler: &costest.Counter{}, readSide: costest.NewRecorder()}
	tp.nats = startNATSProxies(t, dir)
	tp.handlerSrv = &server{port: freePort(t), register: tp.handler.Register}
	tp.readSrv = &server{port: freePort(t), register: tp.readSide.Register}
	for _, s := range []*server{tp.handlerSrv, tp.readSrv} {
		if err := s.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.stop)
	}
	base := append(os.Environ(),
		"COS_NATS_URL="+tp.nats.URLs(),
		"COS_NATS_REPLICAS=3",
		"COS_NUM_SHARDS="+strconv.Itoa(numShards),
		"COS_WRITE_SIDE_HOST=127.0.0.1",
		"COS_WRITE_SIDE_PORT="+strconv.Itoa(tp.handlerSrv.port),
		"COS_COMMAND_HANDLER_TIMEOUT=5",
		"COS_GRPC_CALLS_TIMEOUT=4000",
		"COS_SHUTDOWN_TIMEOUT=10",
		"COS_READ_SIDE_ENABLED=true",
		"COS_READ_SIDE_CONFIG__HOST__rs=127.0.0.1",
		"COS_READ_SIDE_CONFIG__PORT__rs="+strconv.Itoa(tp.readSrv.port),
		"COS_READ_SIDE_CONFIG__TIMEOUT__rs=3000",
		"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__rs=32",
		"LOG_LEVEL=INFO",
	)
	// Each role its own restricted NATS user, the password from a file, as in a hardened deployment.
	for _, r := range []natsperm.Role{natsperm.Gateway, natsperm.Worker, natsperm.Projector} {
		if err := os.WriteFile(filepath.Join(dir, string(r)+".password"), []byte(rolePassword(r)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mkNamed := func(role, name string, extraEnv ...string) (*proc, string) {
		probe := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		env := append(append([]string(nil), base...), "COS_SERVICE_NAME="+name, "COS_METRICS_ADDRESS="+probe,
			"COS_NATS_USER="+natsperm.User(natsperm.Role(role)), "COS_NATS_PASSWORD_FILE="+filepath.Join(dir, role+".password"))
		env = append(env, extraEnv...)
		var addr string
		if role == "gateway" {
			addr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
			host, port, _ := net.SplitHostPort(addr)
			env = append(env, "COS_ADDRESS="+host, "COS_PORT="+port)
		}
		return &proc{name: name, bin: filepath.Join(bin, role), env: env, log: filepath.Join(dir, name+".log"), probe: probe}, addr
	}
	mk := func(role string, i int) *proc {
		p, addr := mkNamed(role, fmt.Sprintf("%s-%d", role, i))
		if addr != "" {
			tp.gwAddrs = append(tp.gwAddrs, addr)
		}
		return p
	}
	tp.extraGateway = func(name, natsURL string) (*proc, string) {
		return mkNamed("gateway", name, "COS_NATS_URL="+natsURL) // the later setting wins
	}
	for i := range 2 {
		tp.gateways = append(tp.gateways, mk("gateway", i))
		tp.workers = append(tp.workers, mk("worker", i))
		tp.projectors = append(tp.projectors, mk("projector", i))
	}
	t.Cleanup(func() {
		for _, p := range tp.ours() {
			p.kill()
		}
		for _, n := range tp.nats.nodes {
			n.kill()
		}
		// Checked last, after every fault: recoveries take paths the permission tests do not.
		if v := tp.nats.violations(); len(v) > 0 {
			t.Errorf("%d permission violations, a role's permission set lacks what it needed; first: %s", len(v), strings.Join(v[:min(len(v), 5)], "\n"))
		}
		if t.Failed() {
			for _, p := range tp.all() {
				t.Logf("---- %s (last lines of %s) ----\n%s", p.name, p.log, p.tail(40))
			}
		}
	})
	return tp
}

// startAllAtOnce launches every process of ours at the same moment, before NATS is up, and the NATS
// nodes at once two seconds later, on an empty cluster (what a fresh install does when everything
// comes up together), and waits until all are ready.
func (tp *topology) startAllAtOnce(ctx context.Context) (time.Duration, error) {
	began := time.Now()
	startAll := func(ps []*proc) error {
		var wg sync.WaitGroup
		errs := make(chan error, len(ps))
		for _, p := range ps {
			wg.Go(func() {
				if err := p.start(); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	if err := startAll(tp.ours()); err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(2 * time.Second):
	}
	if err := startAll(tp.nats.nodes); err != nil {
		return 0, err
	}
	if err := tp.nats.healthy(ctx); err != nil {
		return 0, err
	}
	if err := waitReady(ctx, tp.ours()); err != nil {
		return 0, err
	}
	return time.Since(began), nil
}

// unaskedExits lists every process exit nobody asked for.
func (tp *topology) unaskedExits() []string {
	var out []string
	for _, p := range tp.all() {
		out = append(out, p.exits()...)
	}
	return out
}

// clients dials every gateway.
func (tp *topology) clients() []cospb.ChiefOfStateServiceClient {
	var out []cospb.ChiefOfStateServiceClient
	for _, addr := range tp.gwAddrs {
		out = append(out, costest.Client(tp.t, addr))
	}
	return out
}
