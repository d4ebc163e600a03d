package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/internal/loopport"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Scenario 11, "distributed": gateways, workers (and a projector) as separate OS processes — the
// topology users run — over NATS in its own process (R1: one nats-server; R3: a 3-node cluster), beside
// a floor that also crosses NATS once: a front process takes the gRPC call and does one NATS request
// to a back process, which does the in-process Floor's work. CPU is read per process from /proc.

// Children starts the child processes of scenario 11 that run this binary (cmd/cosbench provides it:
// a library cannot know how its caller dispatches to child roles).
type Children interface {
	// NATS returns an unstarted command running nats-server with JetStream on loopback, one server
	// (size 1) or a size-node cluster, storing under dir. Its first stdout line, once it is ready, is
	// the client URL list (comma-separated).
	NATS(dir string, size int) *exec.Cmd
	// Floor returns an unstarted command that runs ServeFloorPart with FloorPartFromEnv; its extra
	// environment is p.Env(). Its first stdout line, once ready, is its address (a front) or "ready".
	Floor(p FloorPart) *exec.Cmd
}

// FloorPart configures one process of the distributed floor.
type FloorPart struct {
	Front   bool   // a front (gRPC server, one NATS request per command); else a back
	NATSURL string // comma-separated client URLs
	Handler string // a back's write handler, host:port
	Backs   int    // number of backs: a command goes to back hash(entity id) % Backs
	Index   int    // a back's index
}

// Environment of a floor part's child process.
const (
	EnvRole        = "COSBENCH_ROLE" // floor-front or floor-back
	envFloorNATS   = "COSBENCH_FLOOR_NATS"
	envFloorHandle = "COSBENCH_FLOOR_HANDLER"
	envFloorBacks  = "COSBENCH_FLOOR_BACKS"
	envFloorIndex  = "COSBENCH_FLOOR_INDEX"
	// RoleFloorFront and RoleFloorBack are the EnvRole values of floor parts.
	RoleFloorFront = "floor-front"
	RoleFloorBack  = "floor-back"
)

// Env is the environment that FloorPartFromEnv reads back.
func (p FloorPart) Env() []string {
	role := RoleFloorBack
	if p.Front {
		role = RoleFloorFront
	}
	return []string{EnvRole + "=" + role, envFloorNATS + "=" + p.NATSURL, envFloorHandle + "=" + p.Handler,
		envFloorBacks + "=" + strconv.Itoa(p.Backs), envFloorIndex + "=" + strconv.Itoa(p.Index)}
}

// FloorPartFromEnv reads a floor part's configuration (see FloorPart.Env).
func FloorPartFromEnv(getenv func(string) string) (FloorPart, error) {
	p := FloorPart{NATSURL: getenv(envFloorNATS), Handler: getenv(envFloorHandle)}
	switch getenv(EnvRole) {
	case RoleFloorFront:
		p.Front = true
	case RoleFloorBack:
	default:
		return p, fmt.Errorf("%s=%q: want %s or %s", EnvRole, getenv(EnvRole), RoleFloorFront, RoleFloorBack)
	}
	var err error
	if p.Backs, err = strconv.Atoi(getenv(envFloorBacks)); err != nil || p.Backs < 1 {
		return p, fmt.Errorf("%s=%q: want a positive number", envFloorBacks, getenv(envFloorBacks))
	}
	if p.Index, err = strconv.Atoi(getenv(envFloorIndex)); err != nil || p.Index < 0 || p.Index >= p.Backs {
		return p, fmt.Errorf("%s=%q: want 0..%d", envFloorIndex, getenv(envFloorIndex), p.Backs-1)
	}
	if p.NATSURL == "" || (!p.Front && p.Handler == "") {
		return p, fmt.Errorf("%s and (for a back) %s are required", envFloorNATS, envFloorHandle)
	}
	return p, nil
}

// floorSubject is the subject of back i's commands.
func floorSubject(i int) string { return "floorcmd." + strconv.Itoa(i) }

// floorBackOf picks the back of an entity: each entity has exactly one back, which is then its only
// writer, as the Floor's in-memory sequence requires.
func floorBackOf(entityID string, backs int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(entityID))
	return int(h.Sum32() % uint32(backs))
}

// floorErrorHeader marks a back's reply that carries an error instead of a response: the header is
// the gRPC code, the body the message, so the front returns the same status.
const floorErrorHeader = "Cosbench-Floor-Error"

// ServeFloorPart runs a front or a back of the distributed floor until ctx ends. ready is called once
// it takes work, with its gRPC address (a front) or "ready" (a back).
func ServeFloorPart(ctx context.Context, p FloorPart, ready func(string)) error {
	nc, err := nats.Connect(p.NATSURL, nats.Name("cosbench-"+map[bool]string{true: RoleFloorFront, false: RoleFloorBack}[p.Front]))
	if err != nil {
		return fmt.Errorf("floor: connect to NATS: %w", err)
	}
	defer nc.Close()
	if p.Front {
		return serveFloorFront(ctx, nc, p, ready)
	}
	return serveFloorBack(ctx, nc, p, ready)
}

// floorFront is the gRPC side of the distributed floor: one NATS request per command.
type floorFront struct {
	cospb.UnimplementedChiefOfStateServiceServer
	nc    *nats.Conn
	backs int
}

func serveFloorFront(ctx context.Context, nc *nats.Conn, p FloorPart, ready func(string)) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("floor front: listen: %w", err)
	}
	srv := grpc.NewServer()
	cospb.RegisterChiefOfStateServiceServer(srv, &floorFront{nc: nc, backs: p.Backs})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	ready(lis.Addr().String())
	select {
	case <-ctx.Done():
		srv.Stop()
		return nil
	case err := <-done:
		return fmt.Errorf("floor front: serve: %w", err)
	}
}

// ProcessCommand forwards the command to its entity's back and returns what the back returned.
func (f *floorFront) ProcessCommand(ctx context.Context, req *cospb.ProcessCommandRequest) (*cospb.ProcessCommandResponse, error) {
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, ok := ctx.Deadline(); !ok { // bound the wait like the gateway does (COS_COMMAND_HANDLER_TIMEOUT's default)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	reply, err := f.nc.RequestWithContext(ctx, floorSubject(floorBackOf(req.GetEntityId(), f.backs)), data)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, status.Error(codes.DeadlineExceeded, err.Error())
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if c := reply.Header.Get(floorErrorHeader); c != "" {
		code, err := strconv.Atoi(c)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "floor front: bad error reply %q", c)
		}
		return nil, status.Error(codes.Code(code), string(reply.Data))
	}
	resp := &cospb.ProcessCommandResponse{}
	if err := proto.Unmarshal(reply.Data, resp); err != nil {
		return nil, status.Errorf(codes.Internal, "floor front: bad reply: %v", err)
	}
	return resp, nil
}

func serveFloorBack(ctx context.Context, nc *nats.Conn, p FloorPart, ready func(string)) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("floor back: jetstream: %w", err)
	}
	conn, err := grpc.NewClient(p.Handler, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("floor back: dial handler: %w", err)
	}
	defer conn.Close()
	f := &Floor{js: js, handler: cospb.NewWriteSideHandlerServiceClient(conn), entities: map[string]*floorEntity{}}
	var inflight sync.WaitGroup
	// A goroutine per message: a subscription's callbacks run one at a time, and the in-process floor's
	// gRPC server also runs each call on its own goroutine (the per-entity lock orders an entity's).
	sub, err := nc.QueueSubscribe(floorSubject(p.Index), "floor", func(m *nats.Msg) {
		inflight.Go(func() { floorBackHandle(f, m) })
	})
	if err != nil {
		return fmt.Errorf("floor back: subscribe: %w", err)
	}
	if err := nc.Flush(); err != nil { // the subscription is known to the server before we say ready
		return fmt.Errorf("floor back: flush: %w", err)
	}
	ready("ready")
	<-ctx.Done()
	_ = sub.Unsubscribe()
	inflight.Wait()
	return nil
}

// floorBackHandle runs one command through the Floor and replies with its response or its gRPC status.
func floorBackHandle(f *Floor, m *nats.Msg) {
	reply := nats.NewMsg(m.Reply)
	req := &cospb.ProcessCommandRequest{}
	var err error
	if err = proto.Unmarshal(m.Data, req); err != nil {
		err = status.Error(codes.InvalidArgument, err.Error())
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the front gives up after as long
		var resp *cospb.ProcessCommandResponse
		resp, err = f.ProcessCommand(ctx, req)
		cancel()
		if err == nil {
			reply.Data, err = proto.Marshal(resp)
		}
	}
	if err != nil {
		st := status.Convert(err)
		reply.Header.Set(floorErrorHeader, strconv.Itoa(int(st.Code())))
		reply.Data = []byte(st.Message())
	}
	_ = m.RespondMsg(reply) // a lost reply shows as the front's timeout
}

// child is a process started by scenario 11.
type child struct {
	role   string // gateway, worker, projector, nats, front, back: the key of its cpu_us_ extra
	name   string
	cmd    *exec.Cmd
	log    string        // its stderr
	exited chan struct{} // closed once it has exited
	err    error         // its exit status, valid once exited is closed
}

// procs are the running children of one setup, stopped in reverse order of start.
type procs struct {
	logDir string
	list   []*child
}

// start starts cmd as a child with its stderr in a log file, and waits until ready succeeds (ready
// gets the child's first stdout line, "" when the child prints nothing useful).
func (ps *procs) start(ctx context.Context, role, name string, cmd *exec.Cmd, ready func(ctx context.Context, c *child, line <-chan string) error) (*child, error) {
	if err := os.MkdirAll(ps.logDir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: log directory: %w", name, err)
	}
	c := &child{role: role, name: name, cmd: cmd, log: filepath.Join(ps.logDir, name+".log"), exited: make(chan struct{})}
	logFile, err := os.Create(c.log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer logFile.Close() // the child has its own copy once started
	line := make(chan string, 1)
	cmd.Stdout = &firstLine{ch: line}
	cmd.Stderr = logFile
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { c.err = cmd.Wait(); close(c.exited) }()
	ps.list = append(ps.list, c)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second) // an R3 cluster takes a few seconds to form
	defer cancel()
	if err := ready(ctx, c, line); err != nil {
		return nil, fmt.Errorf("%s did not start: %w%s", name, err, c.logTail())
	}
	return c, nil
}

// logTail is the end of a child's log, for an error message.
func (c *child) logTail() string {
	b, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	if len(lines) == 0 || lines[0] == "" {
		return " (" + c.log + " is empty)"
	}
	return "\n  " + c.log + ":\n    " + strings.Join(lines, "\n    ")
}

// readLine waits for the child's first stdout line.
func readLine(dst *string) func(ctx context.Context, c *child, line <-chan string) error {
	return func(ctx context.Context, c *child, line <-chan string) error {
		select {
		case *dst = <-line:
			return nil
		case <-c.exited:
			return fmt.Errorf("exited: %v", c.err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readyz waits until the child's /readyz answers 200.
func readyz(addr string) func(ctx context.Context, c *child, _ <-chan string) error {
	return func(ctx context.Context, c *child, _ <-chan string) error {
		client := &http.Client{Timeout: time.Second}
		url := "http://" + addr + "/readyz"
		for {
			if resp, err := client.Get(url); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
			}
			select {
			case <-c.exited:
				return fmt.Errorf("exited: %v", c.err)
			case <-ctx.Done():
				return fmt.Errorf("%s not ready: %w", url, ctx.Err())
			case <-time.After(50 * time.Millisecond): // a startup poll
			}
		}
	}
}

// stop stops the children of the given roles (all when none), last started first: SIGTERM, then
// SIGKILL if one has not exited after 30 s (longer than a node's default drain).
func (ps *procs) stop(roles ...string) {
	var keep []*child
	for i := len(ps.list) - 1; i >= 0; i-- {
		c := ps.list[i]
		if len(roles) > 0 && !contains(roles, c.role) {
			keep = append([]*child{c}, keep...)
			continue
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	ps.list = keep
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// firstLine passes on the first line written to it and discards the rest.
type firstLine struct {
	mu   sync.Mutex
	buf  []byte
	ch   chan string
	done bool
}

func (w *firstLine) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.buf = append(w.buf, b...)
		if i := bytes.IndexByte(w.buf, '\n'); i >= 0 {
			w.ch <- strings.TrimSpace(string(w.buf[:i]))
			w.done, w.buf = true, nil
		}
	}
	return len(b), nil
}

// cpuSample is the CPU time used so far by this process and by each running child.
type cpuSample struct {
	self  time.Duration
	procs map[*child]time.Duration
}

func (ps *procs) sample() cpuSample {
	s := cpuSample{self: CPUTime(), procs: map[*child]time.Duration{}}
	for _, c := range ps.list {
		s.procs[c] = procCPU(c.cmd.Process.Pid)
	}
	return s
}

// cpuExtra sets res's per-role CPU per successful op (cpu_us_<role>, summed over the role's processes;
// cpu_us_bench is this process: load generator and handlers) and CPUPerOpUs to the sum of them all.
func cpuExtra(res *Result, before, after cpuSample) {
	if res.Extra == nil {
		res.Extra = map[string]float64{}
	}
	ok := res.Ops - res.Errors
	if ok <= 0 {
		return
	}
	us := func(d time.Duration) float64 { return float64(d) / 1e3 / float64(ok) }
	total := after.self - before.self
	res.Extra["cpu_us_bench"] = us(after.self - before.self)
	for c, t := range after.procs {
		d := t - before.procs[c]
		total += d
		res.Extra["cpu_us_"+c.role] += us(d)
	}
	res.CPUPerOpUs = us(total)
}

// procCPU reads a process's utime+stime from /proc/<pid>/stat (fields 14 and 15, in clock ticks); 0
// if it cannot.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Field 2 (the command name) is in parentheses and may hold spaces: count from the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(ut+st) * time.Second / time.Duration(clockTicks())
}

// clockTicks is the kernel's USER_HZ (getconf CLK_TCK), 100 if that fails.
var clockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
})

// buildBinaries builds the gateway, worker and projector into dir, from the repository in the
// working directory.
func buildBinaries(ctx context.Context, dir string) error {
	mod, err := os.ReadFile("go.mod")
	if err != nil || !bytes.Contains(mod, []byte("module github.com/cosnats/cosnats\n")) {
		return errors.New("scenario 11 builds ./cmd/gateway, ./cmd/worker and ./cmd/projector: run cosbench from the repository root (go run ./cmd/cosbench)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build directory: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator), "./cmd/gateway", "./cmd/worker", "./cmd/projector")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/gateway ./cmd/worker ./cmd/projector: %w\n%s", err, out)
	}
	return nil
}

// distOp sends one-event commands round-robin over n entities, each load-generating goroutine to
// the gateway (or front) of its index: with two, the load is spread evenly over them.
func distOp(clients []cospb.ChiefOfStateServiceClient, prefix string, n int) Op {
	cmd := Command(1)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint(prefix, i)
	}
	return func(ctx context.Context, w int, seq int64) error {
		_, err := clients[w%len(clients)].ProcessCommand(ctx, &cospb.ProcessCommandRequest{EntityId: ids[seq%int64(n)], Command: cmd})
		return err
	}
}

// distSetup is what one setup of scenario 11 shares.
type distSetup struct {
	o             Options
	bin           string // directory of the built binaries
	handler       string // the no-op write handler, host:port
	replicas      int
	n             int    // gateways = workers (fronts = backs)
	dir           string // stores and logs
	ps            *procs
	url           string   // NATS client URLs
	workerMetrics []string // the workers' metrics listeners, host:port
}

// conflicts sums cos_append_conflicts_total over the workers: appends the expected-sequence check
// refused (a worker's cached head was stale: another worker had appended since).
func (s *distSetup) conflicts(ctx context.Context) float64 {
	var sum float64
	for _, addr := range s.workerMetrics {
		sum += scrapeCounter(ctx, addr, "cos_append_conflicts_total")
	}
	return sum
}

// scrapeCounter reads one counter (summed over its labels) from a Prometheus text endpoint; 0 when it
// cannot.
func scrapeCounter(ctx context.Context, addr, name string) float64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func plural(n int, one string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %ss", n, one)
}

// env is the COS_* environment of one of our processes.
func (s *distSetup) env(extra ...string) []string {
	host, port, _ := net.SplitHostPort(s.handler)
	env := append(os.Environ(),
		"COS_NATS_URL="+s.url, "COS_NATS_REPLICAS="+strconv.Itoa(s.replicas),
		"COS_WRITE_SIDE_HOST="+host, "COS_WRITE_SIDE_PORT="+port,
		"COS_ADDRESS=127.0.0.1", "LOG_LEVEL=ERROR")
	env = append(env, s.o.Env...)
	return append(env, extra...)
}

// startNode starts one of the built binaries (gateway, worker, projector) and waits until it is ready.
// It returns the gRPC address (used by a gateway only).
func (s *distSetup) startNode(ctx context.Context, role string, i int, extra ...string) (string, error) {
	ports, err := loopport.Pick(2)
	if err != nil {
		return "", fmt.Errorf("%s ports: %w", role, err)
	}
	grpcAddr, metrics := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
	cmd := exec.Command(filepath.Join(s.bin, role))
	cmd.Env = s.env(append([]string{"COS_PORT=" + strconv.Itoa(ports[0]), "COS_METRICS_ADDRESS=" + metrics}, extra...)...)
	_, err = s.ps.start(ctx, role, fmt.Sprintf("%s-%d", role, i), cmd, readyz(metrics))
	if err == nil && role == "worker" {
		s.workerMetrics = append(s.workerMetrics, metrics)
	}
	return grpcAddr, err
}

// clients dials addrs; closing is registered on the setup's teardown by the caller.
func dialAll(addrs []string) ([]cospb.ChiefOfStateServiceClient, func(), error) {
	var clients []cospb.ChiefOfStateServiceClient
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, a := range addrs {
		c, closeC, err := dialClient(a)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("dial %s: %w", a, err)
		}
		clients, closers = append(clients, c), append(closers, closeC)
	}
	return clients, closeAll, nil
}

// measure runs a closed loop at c=64 (after prime and an unmeasured warm-up) and, with open, an open
// loop at half its rate, with CPU per process.
func (s *distSetup) measure(ctx context.Context, scenario, variant string, clients []cospb.ChiefOfStateServiceClient, prefix string, open float64) (closed, opened Result) {
	o := s.o
	op := distOp(clients, prefix, o.Entities)
	ClosedLoop(ctx, "prime", "", 64, 0, 24*time.Hour, limitOps(o.Entities, op))
	ClosedLoop(ctx, "warm-up", "", 64, 0, o.Warmup, op)
	before, conflicts := s.ps.sample(), s.conflicts(ctx)
	closed = ClosedLoop(ctx, scenario, fmt.Sprintf("c=64, %s", variant), 64, 0, o.Duration, op)
	cpuExtra(&closed, before, s.ps.sample())
	if len(s.workerMetrics) > 0 && closed.Ops > 0 {
		closed.Extra["conflicts_per_command"] = (s.conflicts(ctx) - conflicts) / float64(closed.Ops)
	}
	if open < 0 { // half of this closed loop's rate
		open = closed.OpsPerSec / 2
	}
	if open > 0 {
		before = s.ps.sample()
		opened = OpenLoop(ctx, scenario+", open loop", fmt.Sprintf("50%% of max (%.0f/s), %s", open, variant), open, 4096, o.Duration, op)
		cpuExtra(&opened, before, s.ps.sample())
	}
	return closed, opened
}

// runDistSetup measures ours and the floor on one NATS (fresh) and one topology, and tears it all down.
// It returns ours' closed-loop rate.
func runDistSetup(ctx context.Context, s *distSetup, open bool, add func(Result)) (maxRate float64, err error) {
	defer s.ps.stop()
	if s.url, err = s.startNATS(ctx); err != nil {
		return 0, err
	}
	topo := fmt.Sprintf("R%d, %s × %s", s.replicas, plural(s.n, "gateway"), plural(s.n, "worker"))

	// Ours: the gateways first, alone, to check that they cannot answer without a worker process —
	// what follows is then really executed by the workers, across NATS.
	var addrs []string
	for i := range s.n {
		addr, err := s.startNode(ctx, "gateway", i)
		if err != nil {
			return 0, err
		}
		addrs = append(addrs, addr)
	}
	clients, closeClients, err := dialAll(addrs)
	if err != nil {
		return 0, err
	}
	defer closeClients()
	probeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = clients[0].ProcessCommand(probeCtx, &cospb.ProcessCommandRequest{EntityId: "probe", Command: Command(1)})
	cancel()
	if err == nil {
		return 0, errors.New("a gateway without a worker process answered a command: commands are not crossing NATS")
	}
	for i := range s.n {
		if _, err := s.startNode(ctx, "worker", i); err != nil {
			return 0, err
		}
	}
	if err := s.placeEventLeader(ctx); err != nil {
		return 0, err
	}
	openRate := 0.0
	if open {
		openRate = -1
	}
	ours, oursOpen := s.measure(ctx, "Distributed: ProcessCommand", topo, clients, "e-", openRate)
	closeClients()
	s.ps.stop("gateway", "worker")
	s.workerMetrics = nil
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	// The floor, on the same NATS: the stream first (with our replicas), then backs and fronts.
	if err := s.floorStream(ctx); err != nil {
		return 0, err
	}
	for i := range s.n {
		cmd := s.o.Children.Floor(FloorPart{NATSURL: s.url, Handler: s.handler, Backs: s.n, Index: i})
		var line string
		if _, err := s.ps.start(ctx, "back", fmt.Sprintf("floor-back-%d", i), cmd, readLine(&line)); err != nil {
			return 0, err
		}
	}
	addrs = nil
	for i := range s.n {
		cmd := s.o.Children.Floor(FloorPart{Front: true, NATSURL: s.url, Backs: s.n})
		var addr string
		if _, err := s.ps.start(ctx, "front", fmt.Sprintf("floor-front-%d", i), cmd, readLine(&addr)); err != nil {
			return 0, err
		}
		addrs = append(addrs, addr)
	}
	fclients, closeF, err := dialAll(addrs)
	if err != nil {
		return 0, err
	}
	defer closeF()
	ftopo := fmt.Sprintf("R%d, %s × %s", s.replicas, plural(s.n, "front"), plural(s.n, "back"))
	fl, flOpen := s.measure(ctx, "Distributed: floor (crosses NATS once)", ftopo, fclients, "f-", oursOpen.Extra["target_rate"])
	if fl.OpsPerSec > 0 {
		ours.Extra["ratio_to_floor"] = ours.OpsPerSec / fl.OpsPerSec
	}
	add(ours)
	add(fl)
	if open {
		if flOpen.P99Ms > 0 {
			oursOpen.Extra["p99_ratio_to_floor"] = oursOpen.P99Ms / flOpen.P99Ms
		}
		add(oursOpen)
		add(flOpen)
	}
	return ours.OpsPerSec, ctx.Err()
}

// startNATS starts the NATS child and returns its client URLs.
func (s *distSetup) startNATS(ctx context.Context) (string, error) {
	var url string
	if _, err := s.ps.start(ctx, "nats", "nats", s.o.Children.NATS(filepath.Join(s.dir, "nats"), s.replicas), readLine(&url)); err != nil {
		return "", err
	}
	// Every process connects to the first server, and the stream leaders are placed on another (see
	// LeaderServer): ours and the floor cross the same routes.
	first, _, _ := strings.Cut(url, ",")
	return first, nil
}

// placeEventLeader places the event stream's leader on LeaderServer when it is replicated.
func (s *distSetup) placeEventLeader(ctx context.Context) error {
	if s.replicas <= 1 {
		return nil
	}
	return s.withJetStream("place the event stream's leader", func(js jetstream.JetStream) error {
		return PlaceLeaders(ctx, js, LeaderServer, layout.Default().EventStream())
	})
}

// floorStream creates the floor's stream with the setup's replicas and, when replicated, places its
// leader and that of the event stream on LeaderServer.
func (s *distSetup) floorStream(ctx context.Context) error {
	return s.withJetStream("floor stream", func(js jetstream.JetStream) error {
		if err := createFloorStream(ctx, js, s.replicas); err != nil {
			return err
		}
		if s.replicas > 1 {
			return PlaceLeaders(ctx, js, LeaderServer, layout.Default().EventStream(), FloorStream)
		}
		return nil
	})
}

// withJetStream runs fn on a connection of its own to the setup's NATS; what names the errors.
func (s *distSetup) withJetStream(what string, fn func(jetstream.JetStream) error) error {
	nc, err := nats.Connect(s.url, nats.Name("cosbench"))
	if err != nil {
		return fmt.Errorf("%s: connect: %w", what, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fn(js)
}

// distReadSide runs R1, 1 gateway × 1 worker, with a projector delivering to a no-op read side in this
// process, in open loop at a quarter and half of maxRate: the load and the lag.
func distReadSide(ctx context.Context, s *distSetup, maxRate float64, add func(Result)) (err error) {
	defer s.ps.stop()
	rs := &NoopReadSide{}
	rsAddr, stopRS, err := serveGRPC(func(g *grpc.Server) { cospb.RegisterReadSideHandlerServiceServer(g, rs) })
	if err != nil {
		return fmt.Errorf("read side: %w", err)
	}
	defer stopRS()
	if s.url, err = s.startNATS(ctx); err != nil {
		return err
	}
	addr, err := s.startNode(ctx, "gateway", 0)
	if err != nil {
		return err
	}
	if _, err := s.startNode(ctx, "worker", 0); err != nil {
		return err
	}
	h, p, _ := net.SplitHostPort(rsAddr)
	if _, err := s.startNode(ctx, "projector", 0, "COS_READ_SIDE_ENABLED=true", "COS_READ_SIDE_CONFIG__HOST__bench="+h, "COS_READ_SIDE_CONFIG__PORT__bench="+p); err != nil {
		return err
	}
	clients, closeClients, err := dialAll([]string{addr})
	if err != nil {
		return err
	}
	defer closeClients()
	topo := "R1, 1 gateway × 1 worker × 1 projector"
	for _, f := range []float64{0.25, 0.5} {
		prefix := fmt.Sprintf("r%.0f-", f*100)
		op := distOp(clients, prefix, s.o.Entities)
		// Steady state: every entity written once, and the read side caught up with that, unmeasured.
		want := rs.Received() + int64(s.o.Entities)
		ClosedLoop(ctx, "prime", "", 64, 0, 24*time.Hour, limitOps(s.o.Entities, op))
		for deadline := time.Now().Add(time.Minute); rs.Received() < want && time.Now().Before(deadline) && ctx.Err() == nil; {
			time.Sleep(50 * time.Millisecond) // a progress poll in a benchmark, not a test
		}
		rate := f * maxRate
		lag := rs.MeasureLag(true)
		before := s.ps.sample()
		load := OpenLoop(ctx, "Distributed: ProcessCommand, open loop with a read side", fmt.Sprintf("%.0f%% of max (%.0f/s), %s", f*100, rate, topo), rate, 4096, s.o.Duration, op)
		cpuExtra(&load, before, s.ps.sample())
		rs.MeasureLag(false)
		add(load)
		lr := lagResult(lag, load)
		lr.Scenario = "Distributed: read side lag append → HandleReadSide"
		add(lr)
	}
	return ctx.Err()
}

// distributed is scenario 11: ours and the floor as separate processes over NATS, R1 and R3 (R3 only
// with o.Replication), 1×1 and 2×2, then R1 1×1 with a projector.
func distributed(ctx context.Context, o Options, add func(Result)) error {
	bin := filepath.Join(o.Dir, "dist-bin")
	o.Log("scenario 11: building ./cmd/gateway, ./cmd/worker and ./cmd/projector")
	if err := buildBinaries(ctx, bin); err != nil {
		return err
	}
	handler, stopHandler, err := serveGRPC(func(g *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(g, NoopHandler{}) })
	if err != nil {
		return fmt.Errorf("write handler: %w", err)
	}
	defer stopHandler()
	replicas := []int{1}
	if o.Replication {
		replicas = append(replicas, 3)
	}
	var r1Max float64
	for _, r := range replicas {
		for _, n := range []int{1, 2} {
			dir := filepath.Join(o.Dir, fmt.Sprintf("dist-r%d-%dx%d", r, n, n))
			s := &distSetup{o: o, bin: bin, handler: handler, replicas: r, n: n, dir: dir, ps: &procs{logDir: filepath.Join(dir, "logs")}}
			rate, err := runDistSetup(ctx, s, n == 1, add)
			if err != nil {
				return fmt.Errorf("scenario 11, R%d %dx%d: %w", r, n, n, err)
			}
			if r == 1 && n == 1 {
				r1Max = rate
			}
		}
	}
	if r1Max <= 0 {
		return nil
	}
	dir := filepath.Join(o.Dir, "dist-readside")
	s := &distSetup{o: o, bin: bin, handler: handler, replicas: 1, n: 1, dir: dir, ps: &procs{logDir: filepath.Join(dir, "logs")}}
	if err := distReadSide(ctx, s, r1Max, add); err != nil {
		return fmt.Errorf("scenario 11, read side: %w", err)
	}
	return nil
}

// DistributedPair starts, for the live check, ours (one gateway and one worker process) and the
// distributed floor (one front and one back process) side by side on one NATS with the given replicas
// in a child process, and returns a client of each. stop ends every process.
func DistributedPair(ctx context.Context, children Children, dir string, replicas int, env []string) (ours, floor cospb.ChiefOfStateServiceClient, stop func(), err error) {
	var closers []func()
	stop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	bin := filepath.Join(dir, "bin")
	if err := buildBinaries(ctx, bin); err != nil {
		return nil, nil, nil, err
	}
	handler, stopHandler, err := serveGRPC(func(g *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(g, NoopHandler{}) })
	if err != nil {
		return nil, nil, nil, fmt.Errorf("write handler: %w", err)
	}
	closers = append(closers, stopHandler)
	s := &distSetup{o: Options{Children: children, Env: env}, bin: bin, handler: handler, replicas: replicas, n: 1, dir: dir, ps: &procs{logDir: filepath.Join(dir, "logs")}}
	closers = append(closers, func() { s.ps.stop() })
	if s.url, err = s.startNATS(ctx); err != nil {
		return nil, nil, nil, err
	}
	gw, err := s.startNode(ctx, "gateway", 0)
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := s.startNode(ctx, "worker", 0); err != nil {
		return nil, nil, nil, err
	}
	if err := s.floorStream(ctx); err != nil {
		return nil, nil, nil, err
	}
	var line, front string
	if _, err := s.ps.start(ctx, "back", "floor-back-0", children.Floor(FloorPart{NATSURL: s.url, Handler: handler, Backs: 1}), readLine(&line)); err != nil {
		return nil, nil, nil, err
	}
	if _, err := s.ps.start(ctx, "front", "floor-front-0", children.Floor(FloorPart{Front: true, NATSURL: s.url, Backs: 1}), readLine(&front)); err != nil {
		return nil, nil, nil, err
	}
	clients, closeClients, err := dialAll([]string{gw, front})
	if err != nil {
		return nil, nil, nil, err
	}
	closers = append(closers, closeClients)
	return clients[0], clients[1], stop, nil
}
