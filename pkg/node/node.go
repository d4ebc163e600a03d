// Package node assembles the roles of one process — gateway, worker, projector — from a config: it connects to NATS
// (or embeds a server), prepares streams and buckets, and runs the roles until the context ends.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/command"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/readside"
	"github.com/cosnats/cosnats/pkg/statecache"
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
	// Ready, when set, is called once everything serves.
	Ready func(Info)
	// ReadSideTiming overrides readside.DefaultTiming (tests use short delays).
	ReadSideTiming *readside.Policy
}

// Info describes a running node.
type Info struct {
	GRPCAddr  string // gateway address, "" without the gateway role
	NATSURL   string // embedded server's TCP URL when it listens
	Worker    *worker.Worker
	Projector *readside.Projector // nil unless the projector runs here
	// Connect opens another connection to this node's NATS (in-process when embedded), e.g. for tools
	// and benchmarks that must reach it the way the node does. Valid while the node runs.
	Connect func(name string) (*nats.Conn, error)
}

// Run runs the configured roles until ctx ends. With no NATS URL it embeds a server and runs every role
// (the projector only when read sides are enabled).
func Run(ctx context.Context, cfg config.Config, opts Options) error {
	log := opts.Logger
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
	lay, err := layout.New(cfg.NATS.StreamPrefix)
	if err != nil {
		return fmt.Errorf("COS_NATS_PREFIX: %w", err)
	}
	var info Info
	nc, stop, err := connect(cfg, log, &info)
	if err != nil {
		return err
	}
	defer stop()

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	evlog, err := eventlog.Open(setupCtx, js, eventlog.Config{Layout: lay, Replicas: cfg.NATS.Replicas, NumShards: cfg.NumShards})
	if err != nil {
		return err
	}
	var status *readside.StatusStore
	if opts.Roles.Gateway || opts.Roles.Projector {
		if status, err = readside.OpenStatus(setupCtx, js, lay, cfg.NATS.Replicas); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	if opts.Roles.Projector {
		// Its own connection: deliveries and acks must not queue behind the command traffic.
		pnc, err := info.Connect(cfg.ServiceName + "-projector")
		if err != nil {
			return fmt.Errorf("projector connection: %w", err)
		}
		defer pnc.Close()
		pjs, err := jetstream.New(pnc)
		if err != nil {
			return fmt.Errorf("jetstream: %w", err)
		}
		p, err := readside.New(readside.Config{
			Layout:    lay,
			NumShards: cfg.NumShards,
			ReadSides: cfg.EnabledReadSides(),
			Timing:    timing(opts.ReadSideTiming),
		}, readside.Deps{JS: pjs, Status: status, Logger: log.With("role", "projector")})
		if err != nil {
			return err
		}
		info.Projector = p
		g.Go(func() error { return p.Run(gctx) })
	}
	if opts.Roles.Worker {
		w, closeHandler, err := newWorker(setupCtx, cfg, lay, js, nc, evlog, log)
		if err != nil {
			return err
		}
		defer closeHandler()
		info.Worker = w
		g.Go(func() error { return w.Run(gctx) })
	}
	if opts.Roles.Gateway {
		lis := opts.Listener
		if lis == nil {
			addr := net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port))
			if lis, err = net.Listen("tcp", addr); err != nil {
				return fmt.Errorf("listen on %s (COS_ADDRESS/COS_PORT): %w", addr, err)
			}
		}
		info.GRPCAddr = lis.Addr().String()
		var dispatch gateway.Dispatcher = gateway.NATSDispatcher{Conn: nc}
		if info.Worker != nil {
			dispatch = info.Worker // same process: skip the NATS round trip
		}
		srv := newGRPCServer(cfg, lay, dispatch, evlog, log)
		mgr := readside.NewManager(js, status, lay, cfg.NumShards, cfg.EnabledReadSides(), log.With("role", "manager"))
		cospb.RegisterReadSideManagerServiceServer(srv, mgr)
		natspb.RegisterReadSideStatusServiceServer(srv, mgr)
		g.Go(func() error {
			log.Info("gateway serving", "addr", info.GRPCAddr)
			return srv.Serve(lis)
		})
		g.Go(func() error {
			<-gctx.Done()
			stopped := make(chan struct{})
			go func() { srv.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(10 * time.Second): // e.g. an open health Watch stream
				srv.Stop()
			}
			return nil
		})
	}
	if opts.Ready != nil {
		if info.Worker != nil {
			select {
			case <-info.Worker.Subscribed():
			case <-gctx.Done():
			}
		}
		opts.Ready(info)
	}
	err = g.Wait()
	if errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

// connect dials NATS, or starts the embedded server and connects in-process.
func connect(cfg config.Config, log *slog.Logger, info *Info) (*nats.Conn, func(), error) {
	if !cfg.NATS.Embedded() {
		opts := []nats.Option{nats.Name(cfg.ServiceName), nats.MaxReconnects(-1)}
		if cfg.NATS.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.NATS.CredsFile))
		}
		nc, err := nats.Connect(cfg.NATS.URL, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("connect to NATS at COS_NATS_URL: %w", err)
		}
		log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
		info.Connect = func(name string) (*nats.Conn, error) {
			return nats.Connect(cfg.NATS.URL, append(opts, nats.Name(name))...)
		}
		return nc, func() { _ = nc.Drain() }, nil
	}
	srv, err := natsembed.Start(natsembed.Config{
		StoreDir:   cfg.NATS.DataDir,
		Listen:     cfg.NATS.Listen,
		SyncAlways: cfg.NATS.Durability == config.DurabilityAlways,
	})
	if err != nil {
		return nil, nil, err
	}
	nc, err := srv.Connect(cfg.ServiceName)
	if err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	info.NATSURL = srv.ClientURL()
	info.Connect = srv.Connect
	log.Info("embedded NATS started", "store_dir", cfg.NATS.DataDir, "client_url", info.NATSURL, "durability", cfg.NATS.Durability)
	return nc, func() {
		_ = nc.Drain()
		srv.Shutdown()
	}, nil
}

func newWorker(ctx context.Context, cfg config.Config, lay layout.Layout, js jetstream.JetStream, nc *nats.Conn,
	evlog *eventlog.Log, log *slog.Logger) (*worker.Worker, func(), error) {
	cache, err := statecache.Open(ctx, js, statecache.Config{
		Layout:        lay,
		Entries:       cfg.StateCacheEntries,
		Bytes:         cfg.StateCacheBytes,
		UseKV:         !cfg.DisableSnapshot,
		SnapshotEvery: cfg.SnapshotFrequency,
		Replicas:      cfg.NATS.Replicas,
		TTL:           24 * time.Hour,
	}, log)
	if err != nil {
		return nil, nil, err
	}
	creds := insecure.NewCredentials()
	if cfg.WriteSide.UseTLS {
		creds = credentials.NewClientTLSFromCert(nil, "")
	}
	target := net.JoinHostPort(cfg.WriteSide.Host, strconv.Itoa(cfg.WriteSide.Port))
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, fmt.Errorf("write handler at %s: %w", target, err)
	}
	w, err := worker.New(worker.Config{
		Layout:    lay,
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
	}, worker.Deps{
		Conn:    nc,
		Store:   evlog,
		Cache:   cache,
		Handler: cospb.NewWriteSideHandlerServiceClient(conn),
		Logger:  log.With("role", "worker"),
	})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return w, func() { _ = conn.Close() }, nil
}

func newGRPCServer(cfg config.Config, lay layout.Layout, dispatch gateway.Dispatcher, evlog *eventlog.Log, log *slog.Logger) *grpc.Server {
	// Accept messages well over the command limit so an oversized command gets our clear
	// INVALID_ARGUMENT instead of the transport's RESOURCE_EXHAUSTED.
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(cfg.MaxCommandBytes+4<<20),
		// Reuse handler goroutines instead of starting (and growing the stack of) one per call.
		grpc.NumStreamWorkers(uint32(4*runtime.GOMAXPROCS(0))))
	cospb.RegisterChiefOfStateServiceServer(srv, gateway.New(gateway.Config{
		Layout:            lay,
		NumShards:         cfg.NumShards,
		CommandTimeout:    cfg.CommandTimeout,
		MaxCommandBytes:   cfg.MaxCommandBytes,
		PropagatedHeaders: cfg.WriteSide.PropagatedHeaders,
		PersistedHeaders:  cfg.WriteSide.PersistedHeaders,
	}, dispatch, evlog, log.With("role", "gateway")))
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(cospb.ChiefOfStateService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return srv
}

func timing(p *readside.Policy) readside.Policy {
	if p == nil {
		return readside.DefaultTiming
	}
	return *p
}
