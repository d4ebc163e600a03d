// Package node assembles the roles of one process — gateway, worker, projector — from a config: it
// connects to NATS (or embeds a server), waits until the streams and buckets are bound, runs the roles,
// and drains them on shutdown. A process waits out every transient fault (NATS unreachable, a node of
// the cluster down, a leader election) and reports itself not ready meanwhile; only a configuration
// error ends it.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/command"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/health"
	"github.com/cosnats/cosnats/pkg/intake"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/placement"
	"github.com/cosnats/cosnats/pkg/readside"
	"github.com/cosnats/cosnats/pkg/schema"
	"github.com/cosnats/cosnats/pkg/statecache"
	"github.com/cosnats/cosnats/pkg/telemetry"
	"github.com/cosnats/cosnats/pkg/worker"
)

// Roles selects what a process runs.
type Roles struct {
	Gateway   bool
	Worker    bool
	Projector bool
}

// Options are what Run needs besides the config.
type Options struct {
	Roles  Roles
	Logger *slog.Logger
	// Listener, when set, is used for the gRPC server instead of COS_ADDRESS:COS_PORT (tests use :0).
	Listener net.Listener
	// Listening, when set, is called once the gRPC and probe listeners are bound, before NATS is reached
	// (Info has the addresses only).
	Listening func(Info)
	// Ready, when set, is called once everything serves.
	Ready func(Info)
	// ReadSideTiming overrides readside.DefaultTiming (tests use short delays).
	ReadSideTiming *readside.Policy
	// Health, when set, receives the process's readiness conditions (tests read it).
	Health *health.State
	// Metrics, when set, are the process's metrics (tests read them); else a new set.
	Metrics *telemetry.Metrics
	// Tracing, when set, is used instead of tracing configured from the OTEL_* environment (tests record
	// spans in memory).
	Tracing *telemetry.Tracing
}

// Info describes a running node.
type Info struct {
	GRPCAddr  string // gateway address, "" without the gateway role
	AdminAddr string // admin listener's address, "" unless COS_ADMIN_ADDRESS is set
	ProbeAddr string // address of /healthz and /readyz, "" when COS_METRICS_ADDRESS is empty
	NATSURL   string // embedded server's TCP URL when it listens
	Worker    *worker.Worker
	Projector *readside.Projector // nil unless the projector runs here
	// Connect opens another connection to this node's NATS (in-process when embedded), e.g. for tools
	// and benchmarks that must reach it the way the node does. Valid while the node runs.
	Connect func(name string) (*nats.Conn, error)
}

// Run runs the configured roles until ctx ends, then drains them (within COS_SHUTDOWN_TIMEOUT) and
// returns nil. It returns an error only for a configuration that cannot work: invalid settings, or a
// stream or bucket that exists with settings this process disagrees with. With no NATS URL it embeds a
// server and runs every role (the projector only when read sides are enabled).
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	if cfg.NATS.Embedded() {
		opts.Roles = Roles{Gateway: true, Worker: true, Projector: len(cfg.EnabledReadSides()) > 0}
	}
	if !opts.Roles.Gateway && !opts.Roles.Worker && !opts.Roles.Projector {
		return errors.New("node: no role to run")
	}
	if opts.Roles.Worker {
		if err := cfg.WriteSide.Validate(); err != nil {
			return err
		}
	}
	if f := cfg.NATS.CredsFile; f != "" {
		if _, err := os.ReadFile(f); err != nil {
			return fmt.Errorf("COS_NATS_CREDS: %w", err)
		}
	}
	lay, err := layout.New(cfg.NATS.StreamPrefix)
	if err != nil {
		return fmt.Errorf("COS_NATS_PREFIX: %w", err)
	}
	st := opts.Health
	if st == nil {
		st = health.New()
	}
	metrics := opts.Metrics
	if metrics == nil {
		metrics = telemetry.NewMetrics()
	}
	var tracing telemetry.Tracing
	if opts.Tracing != nil {
		tracing = *opts.Tracing
	} else if tracing, err = telemetry.TracingFromEnv(ctx, os.Getenv, cfg.ServiceName, opts.Roles.String()); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(sctx); err != nil {
			opts.Logger.Warn("flush traces", "err", err)
		}
	}()
	if tracing.Enabled {
		opts.Logger.Info("tracing on", "exporter", "otlp")
	}
	log := slog.New(telemetry.LogHandler(opts.Logger.Handler()))
	n := &node{cfg: cfg, opts: opts, log: log, lay: lay, health: st, metrics: metrics, tracing: tracing,
		tracer: telemetry.Tracer(tracing)}
	if err := n.loadSecurity(); err != nil {
		return err
	}
	return n.run(ctx)
}

// String names the roles, e.g. "gateway+worker"; it becomes the cos.role of traces.
func (r Roles) String() string {
	var names []string
	for _, x := range []struct {
		on   bool
		name string
	}{{r.Gateway, "gateway"}, {r.Worker, "worker"}, {r.Projector, "projector"}} {
		if x.on {
			names = append(names, x.name)
		}
	}
	return strings.Join(names, "+")
}

type node struct {
	cfg     config.Config
	opts    Options
	log     *slog.Logger
	lay     layout.Layout
	health  *health.State
	metrics *telemetry.Metrics
	tracing telemetry.Tracing
	tracer  trace.Tracer
	info    Info
	sec     security // TLS material and NATS credentials (security.go)
}

// resources are what set-up binds.
type resources struct {
	evlog  *eventlog.Log
	status *readside.StatusStore
	cache  *statecache.Cache
}

func (n *node) run(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	// Not ready until every role runs. Each step adds its own condition when it begins, so without
	// this one /readyz answered 200 between two steps (seen: between the NATS connection and set-up,
	// a gateway's probe passed and its first command was answered "starting").
	starting := n.health.Add("start", "starting the roles")
	// Listeners first: probes and the gateway's health answer (not ready) while NATS is awaited.
	if cfg.MetricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", n.metrics.Handler())
		mux.Handle("/", health.Handler(n.health))
		probes, err := health.Listen(cfg.MetricsAddress, mux, log)
		if err != nil {
			return err
		}
		n.info.ProbeAddr = probes.Addr()
		probeCtx, stopProbes := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- probes.Serve(probeCtx) }()
		defer func() { stopProbes(); <-done }()
	}

	var gw *gatewayServer
	if n.opts.Roles.Gateway {
		var err error
		if gw, err = n.startGateway(); err != nil {
			return err
		}
		defer gw.stop(0)
	}

	if n.opts.Listening != nil {
		n.opts.Listening(n.info)
	}
	nc, closeNATS, err := n.connect()
	if err != nil {
		return err
	}
	defer closeNATS()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	res, err := n.setUp(ctx, js)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while waiting: nothing to drain
		}
		return err
	}

	// The roles. Shutdown order: the gateway stops taking calls and finishes those in flight (which
	// may wait on this process's worker), then the worker and the projector drain.
	backendCtx, stopBackend := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackend()
	g, gctx := errgroup.WithContext(backendCtx)
	var view *placement.View
	if gw != nil {
		// Each entity's commands go to the worker placement gives it, so its cache stays current. The
		// view listens before this process's worker starts, so it hears that worker's first heartbeat.
		view = placement.NewView(nc, n.lay, 0, n.log.With("role", "gateway"))
		n.metrics.SetWorkers(view.Len)
		g.Go(func() error { return view.Run(gctx) })
		select {
		case <-view.Subscribed():
		case <-gctx.Done():
		}
	}
	if n.opts.Roles.Projector {
		p, err := n.startProjector(gctx, g, js, res.status)
		if err != nil {
			return err
		}
		n.info.Projector = p
	}
	if n.opts.Roles.Worker {
		w, closeHandler, err := n.newWorker(nc, res)
		if err != nil {
			return err
		}
		defer closeHandler()
		n.info.Worker = w
		cond := n.health.Add("worker", "subscribing to commands")
		g.Go(func() error { return w.Run(gctx) })
		select {
		case <-w.Subscribed():
			cond.OK()
		case <-gctx.Done():
		}
	}
	if gw != nil {
		dispatch := gateway.NATSDispatcher{Conn: nc, Tracer: n.tracer, Template: n.lay.CommandSubjects(), Layout: n.lay, Placement: view}
		if n.info.Worker != nil {
			// Same process: its own entities (and all when no other worker answers) skip NATS.
			dispatch.Local, dispatch.LocalID = n.info.Worker, n.info.Worker.ID()
		}
		gw.bind(dispatch, res, js)
	}
	// The NATS intakes stop before the backend (they hand commands to the workers).
	intakeCtx, stopIntakes := context.WithCancel(backendCtx)
	defer stopIntakes()
	intakes, ictx := errgroup.WithContext(intakeCtx)
	if gw != nil && cfg.Intake.Enabled {
		subscribed, closeTypes, err := n.startIntakes(ictx, intakes, nc, js, gw)
		if err != nil {
			return err
		}
		defer closeTypes()
		// Ready means a producer's request finds this gateway, as a gRPC call does.
		cond := n.health.Add("intake", "subscribing to "+n.lay.ProcessSubject())
		select {
		case <-subscribed:
			cond.OK()
		case <-ictx.Done():
		case <-ctx.Done(): // stopped while NATS cannot confirm it
		}
	}
	starting.OK()
	if n.opts.Ready != nil && gctx.Err() == nil {
		n.opts.Ready(n.info)
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	case <-gctx.Done():
	}
	n.health.Add("shutdown", "shutting down")
	if gw != nil {
		gw.stop(cfg.ShutdownTimeout)
	}
	stopIntakes()
	if err := intakes.Wait(); err != nil {
		log.Warn("NATS intake", "err", err)
	}
	stopBackend()
	err = g.Wait()
	if err == nil {
		log.Info("stopped")
	}
	return err
}

// setUp binds (or creates) the streams and buckets this process's roles use, retrying with capped,
// jittered backoff while NATS is unreachable or JetStream cannot answer; only a configuration error
// (a mismatch with what exists) ends it.
func (n *node) setUp(ctx context.Context, js jetstream.JetStream) (resources, error) {
	cond := n.health.Add("setup", "binding streams and buckets")
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		res, err := n.trySetUp(actx, js)
		cancel()
		if err == nil {
			cond.OK()
			if attempt > 1 {
				n.log.Info("NATS JetStream ready", "attempts", attempt)
			}
			return res, nil
		}
		if errors.Is(err, layout.ErrMismatch) {
			return resources{}, err
		}
		if ctx.Err() != nil {
			return resources{}, ctx.Err()
		}
		d := Backoff(attempt)
		cond.Fail("waiting for NATS JetStream: " + err.Error())
		n.log.Warn("waiting for NATS JetStream; retrying", "attempt", attempt, "retry_in", d.Round(time.Millisecond), "err", err)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return resources{}, ctx.Err()
		}
	}
}

func (n *node) trySetUp(ctx context.Context, js jetstream.JetStream) (resources, error) {
	var res resources
	var err error
	cfg := n.cfg
	if res.evlog, err = eventlog.Open(ctx, js, eventlog.Config{Layout: n.lay, Replicas: cfg.NATS.Replicas, NumShards: cfg.NumShards}); err != nil {
		return res, err
	}
	if n.opts.Roles.Gateway || n.opts.Roles.Projector {
		if res.status, err = readside.OpenStatus(ctx, js, n.lay, cfg.NATS.Replicas); err != nil {
			return res, err
		}
	}
	if n.opts.Roles.Gateway && cfg.Intake.Enabled {
		if err := intake.Ensure(ctx, js, n.intakeConfig()); err != nil {
			return res, err
		}
	}
	if n.opts.Roles.Worker {
		res.cache, err = statecache.Open(ctx, js, statecache.Config{
			Layout:        n.lay,
			Entries:       cfg.StateCacheEntries,
			Bytes:         cfg.StateCacheBytes,
			UseKV:         !cfg.DisableSnapshot,
			SnapshotEvery: cfg.SnapshotFrequency,
			Replicas:      cfg.NATS.Replicas,
			TTL:           24 * time.Hour,
		}, n.log)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// Backoff is the delay before the attempt-th retry of something that waits for NATS: 100 ms doubling
// to 5 s, each drawn in [d/2, d) so processes that start together do not retry in step.
func Backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	d = min(d, 5*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}

// connect dials NATS, or starts the embedded server and connects in-process. An unreachable server is
// not an error: the connection keeps trying in the background and readiness says so.
func (n *node) connect() (*nats.Conn, func(), error) {
	cfg := n.cfg
	if !cfg.NATS.Embedded() {
		dial := func(name, what string) (*nats.Conn, error) {
			cond := n.health.Add(what, "connecting to NATS")
			nc, err := nats.Connect(cfg.NATS.URL, n.natsOptions(name, cond)...)
			if err != nil {
				return nil, fmt.Errorf("COS_NATS_URL: %w", err)
			}
			return nc, nil
		}
		nc, err := dial(cfg.ServiceName, "nats")
		if err != nil {
			return nil, nil, err
		}
		n.metrics.WatchConnected(nc.IsConnected)
		n.info.Connect = func(name string) (*nats.Conn, error) { return dial(name, "nats "+name) }
		return nc, func() { n.close(nc) }, nil
	}
	srv, err := natsembed.Start(natsembed.Config{
		StoreDir:   cfg.NATS.DataDir,
		Listen:     cfg.NATS.Listen,
		SyncAlways: cfg.NATS.Durability == config.DurabilityAlways,
		User:       cfg.NATS.ListenUser,
		Password:   string(cfg.NATS.ListenPassword),
		TLS:        n.sec.natsListen,
	})
	if err != nil {
		return nil, nil, err
	}
	nc, err := srv.Connect(cfg.ServiceName, nats.ReconnectBufSize(-1))
	if err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	n.metrics.WatchConnected(nc.IsConnected)
	n.info.NATSURL = srv.ClientURL()
	n.info.Connect = func(name string) (*nats.Conn, error) { return srv.Connect(name, nats.ReconnectBufSize(-1)) }
	n.log.Info("embedded NATS started", "store_dir", cfg.NATS.DataDir, "client_url", n.info.NATSURL, "durability", cfg.NATS.Durability)
	return nc, func() {
		n.close(nc)
		srv.Shutdown()
	}, nil
}

// close drains a connection (what was published is flushed) and waits for it to close.
func (n *node) close(nc *nats.Conn) {
	if !nc.IsConnected() {
		nc.Close() // nothing can be flushed
		return
	}
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		nc.Close()
	}
}

// natsOptions are the connection settings of every process: reconnect forever, never buffer what is
// published while disconnected (an append or reply sent after reconnecting could land long after its
// caller was answered), notice a dead connection within seconds, and report the state in cond.
func (n *node) natsOptions(name string, cond *health.Condition) []nats.Option {
	log := n.log.With("connection", name)
	var refused lastError
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(-1),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.Timeout(5 * time.Second),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
			cond.OK()
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			cond.OK()
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() || nc.IsDraining() {
				return // our own shutdown
			}
			log.Warn("disconnected from NATS; reconnecting", "err", err)
			cond.Fail("disconnected from NATS; reconnecting")
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Debug("reconnect attempt failed", "err", err)
			if isSecurityError(err) {
				// Credentials or TLS: worth saying (once per distinct error), as waiting will not fix it
				// unless someone does.
				if refused.changed(err) {
					log.Warn("NATS refused the connection; retrying", "err", err)
				}
				cond.Fail("connecting to NATS: " + err.Error())
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { cond.Fail("NATS connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "subject", subject, "err", err)
		}),
	}
	return append(opts, n.natsSecurityOptions()...)
}

func (n *node) startProjector(ctx context.Context, g *errgroup.Group, js jetstream.JetStream, status *readside.StatusStore) (*readside.Projector, error) {
	// Its own connection: deliveries and acks must not queue behind the command traffic.
	pnc, err := n.info.Connect(n.cfg.ServiceName + "-projector")
	if err != nil {
		return nil, fmt.Errorf("projector connection: %w", err)
	}
	pjs, err := jetstream.New(pnc)
	if err != nil {
		pnc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	n.metrics.WatchConnected(pnc.IsConnected)
	p, err := readside.New(readside.Config{
		Layout:       n.lay,
		NumShards:    n.cfg.NumShards,
		ReadSides:    n.cfg.EnabledReadSides(),
		Timing:       timing(n.opts.ReadSideTiming),
		DrainTimeout: n.cfg.ShutdownTimeout,
	}, readside.Deps{Conn: pnc, JS: pjs, Status: status, Logger: n.log.With("role", "projector"),
		Ready:   n.health.Add("projector", "binding read-side consumers"),
		Metrics: n.metrics, Tracer: n.tracer, DialOptions: telemetry.ClientOptions(n.metrics, n.tracing)})
	if err != nil {
		pnc.Close()
		return nil, err
	}
	g.Go(func() error {
		defer n.close(pnc)
		return p.Run(ctx)
	})
	return p, nil
}

func (n *node) newWorker(nc *nats.Conn, res resources) (*worker.Worker, func(), error) {
	cfg := n.cfg
	conn, err := n.dialWriteSide()
	if err != nil {
		return nil, nil, err
	}
	w, err := worker.New(worker.Config{
		Layout:    n.lay,
		NumShards: cfg.NumShards,
		Rules: command.Rules{
			CallTimeout:    cfg.HandlerCallTimeout,
			Validate:       cfg.WriteSide.ProtoValidation,
			EventTypes:     command.NewTypeSet(cfg.WriteSide.EventProtos),
			StateTypes:     command.NewTypeSet(cfg.WriteSide.StateProtos),
			ForwardHeaders: true,
		},
		CommandTimeout:    cfg.CommandTimeout,
		ConflictRetries:   cfg.ConflictRetries,
		IdempotencyWindow: cfg.IdempotencyWindow,
		MaxCommandBytes:   cfg.MaxCommandBytes,
		MaxPendingBytes:   cfg.MaxPendingBytes,
		MaxEntityQueue:    cfg.MaxEntityQueue,
		DrainTimeout:      cfg.ShutdownTimeout,
	}, worker.Deps{
		Conn:    nc,
		Store:   res.evlog,
		Cache:   res.cache,
		Handler: cospb.NewWriteSideHandlerServiceClient(conn),
		Logger:  n.log.With("role", "worker"),
		Metrics: n.metrics,
		Tracer:  n.tracer,
	})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return w, func() { _ = conn.Close() }, nil
}

// dialWriteSide makes a client connection to the write handler (it connects on first use).
func (n *node) dialWriteSide() (*grpc.ClientConn, error) {
	ws := n.cfg.WriteSide
	target := net.JoinHostPort(ws.Host, strconv.Itoa(ws.Port))
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(n.sec.writeSide)}, telemetry.ClientOptions(n.metrics, n.tracing)...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("write handler at %s: %w", target, err)
	}
	return conn, nil
}

// MaxMetadataBytes bounds the gRPC metadata of one call to the gateway.
const MaxMetadataBytes = 64 << 10

// gatewayServer is the gateway's gRPC server: it serves from the start (health NOT_SERVING, calls
// UNAVAILABLE) and binds the services once set-up is done.
type gatewayServer struct {
	srv     *grpc.Server
	admin   *grpc.Server // the admin listener's server; nil when the admin services share srv
	adminCh chan error
	svc     *gateway.Service
	mgr     *readside.Manager
	intake  *intake.Status
	health  *grpchealth.Server
	served  chan error
	stopped bool
}

// streamWorkers is how many gRPC calls at once run on reused goroutines: the concurrency of a busy
// gateway.
const streamWorkers = 256

func (n *node) startGateway() (*gatewayServer, error) {
	cfg := n.cfg
	lis := n.opts.Listener
	if lis == nil {
		addr := net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port))
		var err error
		if lis, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("listen on %s (COS_ADDRESS/COS_PORT): %w", addr, err)
		}
	}
	n.info.GRPCAddr = lis.Addr().String()
	// Accept messages well over the command limit so an oversized command gets our clear
	// INVALID_ARGUMENT instead of the transport's RESOURCE_EXHAUSTED.
	sopts := []grpc.ServerOption{grpc.MaxRecvMsgSize(cfg.MaxCommandBytes + 4<<20),
		// Metadata a client may send with a call (grpc-go would take 16 MiB): headers, ids, trace context.
		grpc.MaxHeaderListSize(MaxMetadataBytes),
		// Reuse handler goroutines instead of starting (and growing the stack of) one per call: a
		// command runs on its call's goroutine with a deep stack, and growing a new goroutine's stack
		// to it cost ~10 µs per command (cosbench profiles). Calls beyond the workers get a goroutine
		// of their own; an idle worker costs only its stack.
		grpc.NumStreamWorkers(streamWorkers)}
	if h := telemetry.ServerHandler(n.tracing); h != nil {
		sopts = append(sopts, grpc.StatsHandler(h))
	}
	sopts = append(sopts, n.sec.serverOptions()...) // TLS/mTLS when COS_TLS_* are set
	srv := grpc.NewServer(sopts...)
	log := n.log.With("role", "gateway")
	gs := &gatewayServer{
		srv: srv,
		svc: gateway.New(gateway.Config{
			Layout:            n.lay,
			NumShards:         cfg.NumShards,
			CommandTimeout:    cfg.CommandTimeout,
			MaxCommandBytes:   cfg.MaxCommandBytes,
			PropagatedHeaders: cfg.WriteSide.PropagatedHeaders,
			PersistedHeaders:  cfg.WriteSide.PersistedHeaders,
			Subscriptions: gateway.SubscriptionConfig{Enabled: cfg.Subscription.Enabled, Buffer: cfg.Subscription.Buffer,
				StallTimeout: cfg.Subscription.StallTimeout},
		}, log, n.metrics),
		mgr:    readside.NewManager(n.lay, cfg.NumShards, n.log.With("role", "manager")),
		health: grpchealth.NewServer(),
		served: make(chan error, 1),
	}
	cospb.RegisterChiefOfStateServiceServer(srv, gs.svc)
	healthpb.RegisterHealthServer(srv, gs.health)
	// The operator's services: on the main port as in COS, or only on the admin listener.
	adminSrv := srv
	var alis net.Listener
	if cfg.AdminAddress != "" {
		var err error
		if alis, err = net.Listen("tcp", cfg.AdminAddress); err != nil {
			_ = lis.Close()
			return nil, fmt.Errorf("listen on %s (COS_ADMIN_ADDRESS): %w", cfg.AdminAddress, err)
		}
		n.info.AdminAddr = alis.Addr().String()
		adminSrv = grpc.NewServer(sopts...)
		healthpb.RegisterHealthServer(adminSrv, gs.health)
		gs.admin, gs.adminCh = adminSrv, make(chan error, 1)
	}
	cospb.RegisterReadSideManagerServiceServer(adminSrv, gs.mgr)
	natspb.RegisterReadSideStatusServiceServer(adminSrv, gs.mgr)
	gs.intake = intake.NewStatus(n.lay, cfg.Intake.Enabled)
	natspb.RegisterIntakeServiceServer(adminSrv, gs.intake)
	reflection.Register(adminSrv)
	if alis != nil {
		// Only once every service is registered: grpc-go refuses (fatally) a registration after Serve.
		go func() {
			n.log.Info("admin services serving", "addr", n.info.AdminAddr)
			gs.adminCh <- adminSrv.Serve(alis)
		}()
	}
	n.health.OnChange(func(ready bool) {
		s := healthpb.HealthCheckResponse_NOT_SERVING
		if ready {
			s = healthpb.HealthCheckResponse_SERVING
		}
		gs.health.SetServingStatus("", s)
		gs.health.SetServingStatus(cospb.ChiefOfStateService_ServiceDesc.ServiceName, s)
	})
	go func() {
		n.log.Info("gateway serving", "addr", n.info.GRPCAddr)
		gs.served <- srv.Serve(lis)
	}()
	return gs, nil
}

func (gs *gatewayServer) bind(dispatch gateway.Dispatcher, res resources, js jetstream.JetStream) {
	gs.svc.Bind(dispatch, res.evlog)
	gs.svc.BindSubscriptions(js)
	gs.mgr.Bind(js, res.status)
	gs.intake.Bind(js)
}

// stop ends the server: with a timeout, calls in flight finish within it first.
func (gs *gatewayServer) stop(timeout time.Duration) {
	if gs.stopped {
		return
	}
	gs.stopped = true
	gs.health.Shutdown() // NOT_SERVING for every service, also to open Watch streams
	// Subscription streams never end on their own: end them first (each client is told where to resume),
	// or the graceful stop would wait for them until the timeout.
	subsTimeout := timeout
	if subsTimeout <= 0 {
		subsTimeout = 5 * time.Second
	}
	subsCtx, cancelSubs := context.WithTimeout(context.Background(), subsTimeout)
	gs.svc.EndSubscriptions(subsCtx)
	cancelSubs()
	if timeout > 0 {
		done := make(chan struct{})
		go func() { gs.srv.GracefulStop(); close(done) }()
		t := time.NewTimer(timeout)
		select {
		case <-done:
		case <-t.C: // e.g. an open health Watch stream
		}
		t.Stop()
	}
	gs.srv.Stop()
	<-gs.served
	if gs.admin != nil {
		gs.admin.Stop() // operators' calls are not waited for
		<-gs.adminCh
	}
}

func timing(p *readside.Policy) readside.Policy {
	if p == nil {
		return readside.DefaultTiming
	}
	return *p
}

func (n *node) intakeConfig() intake.AsyncConfig {
	in := n.cfg.Intake
	return intake.AsyncConfig{
		Layout:        n.lay,
		Replicas:      n.cfg.NATS.Replicas,
		MaxMessages:   in.MaxMessages,
		MaxBytes:      in.MaxBytes,
		MaxAge:        in.MaxAge,
		Duplicates:    in.Duplicates,
		OutcomeMaxAge: in.OutcomeMaxAge,
		MaxInFlight:   in.MaxInFlight,
		// The command, its headers and the envelope: what the gateway accepts, with room to spare.
		MaxMsgSize: int32(n.cfg.MaxCommandBytes + intake.MaxHeaderBytes + 4096),
	}
}

// startIntakes runs the synchronous and asynchronous NATS intakes of a gateway. It returns a channel
// closed once the synchronous one's subscription is confirmed, and what closes the connection used to
// ask the write handler for message types.
func (n *node) startIntakes(ctx context.Context, g *errgroup.Group, nc *nats.Conn, js jetstream.JetStream, gw *gatewayServer) (<-chan struct{}, func(), error) {
	types, closeTypes, err := n.messageTypes()
	if err != nil {
		return nil, nil, err
	}
	log := n.log.With("role", "intake")
	sync := intake.NewSync(intake.SyncConfig{Layout: n.lay}, nc, gw.svc, types, log)
	async := intake.NewAsync(n.intakeConfig(), intake.AsyncDeps{Conn: nc, JS: js, Run: gw.svc, Types: types, Logger: log,
		Metrics: n.metrics, DrainTimeout: n.cfg.ShutdownTimeout})
	g.Go(func() error { return sync.Run(ctx) })
	g.Go(func() error { return async.Run(ctx) })
	return sync.Subscribed(), closeTypes, nil
}

// messageTypes is where the intakes find the application's message types for JSON: the descriptor set
// and the write handler's reflection. nil when there is neither.
func (n *node) messageTypes() (*schema.Resolver, func(), error) {
	ws := n.cfg.WriteSide
	opts := schema.Options{DescriptorSet: ws.Descriptors}
	closeConn := func() {}
	if ws.Reflection && ws.Host != "" && ws.Port > 0 {
		conn, err := n.dialWriteSide()
		if err != nil {
			return nil, nil, err
		}
		opts.Reflection, closeConn = conn, func() { _ = conn.Close() }
	}
	if opts.DescriptorSet == "" && opts.Reflection == nil {
		return nil, closeConn, nil
	}
	r, err := schema.New(opts)
	if err != nil {
		closeConn()
		return nil, nil, fmt.Errorf("COS_WRITE_SIDE_DESCRIPTORS: %w", err)
	}
	return r, closeConn, nil
}
