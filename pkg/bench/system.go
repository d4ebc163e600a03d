package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/natsembed"
	"github.com/cosnats/cosnats/pkg/node"
)

// Setup describes the system under test.
type Setup struct {
	Dir        string   // working directory for stores
	Replicas   int      // 1 = one server; 3 = a 3-node cluster on loopback, in this process
	SyncAlways bool     // sync_interval: always
	NATSURL    string   // an external NATS instead of starting one (Replicas then only sets stream replicas)
	ReadSide   bool     // run a projector with one no-op read side
	Env        []string // extra COS_* settings for the node, e.g. COS_DISABLE_SNAPSHOT=true
}

// name is the setup's short name in cosbench's -setups flag: r1, r1-sync, r3, r3-sync.
func (s Setup) name() string {
	n := fmt.Sprintf("r%d", max(s.Replicas, 1))
	if s.SyncAlways {
		n += "-sync"
	}
	return n
}

// Mode describes the setup in words for the report.
func (s Setup) Mode() string {
	where := "embedded single process (NATS, gateway, worker" + map[bool]string{true: ", projector", false: ""}[s.ReadSide] + " and handlers in one process)"
	switch {
	case s.NATSURL != "":
		where = "external NATS at COS_NATS_URL; gateway, worker and handlers in this process"
	case s.Replicas > 1:
		where = fmt.Sprintf("%d-node NATS cluster on loopback in this process; gateway, worker and handlers in this process", s.Replicas)
	}
	sync := "sync_interval default (2 min)"
	if s.SyncAlways {
		sync = "sync_interval always"
	}
	return fmt.Sprintf("%s, R%d, %s", where, max(s.Replicas, 1), sync)
}

// System is a running system with no-op handlers.
type System struct {
	Setup    Setup
	Client   cospb.ChiefOfStateServiceClient
	NC       *nats.Conn // a connection like the node's own (in-process when embedded)
	JS       jetstream.JetStream
	ReadSide *NoopReadSide
	Node     node.Info
	Handler  string // write handler address

	closers []func()
}

// Close stops everything the system started, in reverse order.
func (s *System) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// serveGRPC serves a handler on a loopback port.
func serveGRPC(register func(*grpc.Server)) (string, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	return lis.Addr().String(), s.Stop, nil
}

// Start starts a system: NATS (unless external), the no-op write handler, optionally the no-op read
// side, and one node with every role, all in this process.
func Start(ctx context.Context, set Setup) (sys *System, err error) {
	sys = &System{Setup: set, ReadSide: &NoopReadSide{}}
	started := sys // the error returns below set sys to nil: close what was started
	defer func() {
		if err != nil {
			started.Close()
		}
	}()
	handler, stop, err := serveGRPC(func(s *grpc.Server) { cospb.RegisterWriteSideHandlerServiceServer(s, NoopHandler{}) })
	if err != nil {
		return nil, err
	}
	sys.closers = append(sys.closers, stop)
	sys.Handler = handler
	host, port, _ := net.SplitHostPort(handler)
	env := []string{
		"COS_WRITE_SIDE_HOST=" + host, "COS_WRITE_SIDE_PORT=" + port,
		"COS_DATA_DIR=" + filepath.Join(set.Dir, "nats"),
		"LOG_LEVEL=ERROR",
		"COS_METRICS_ADDRESS=", // no listener: two systems may run at once (the registry still counts)
	}
	natsURL := set.NATSURL
	if natsURL == "" && set.Replicas > 1 {
		c, err := natsembed.StartCluster(natsembed.ClusterConfig{Size: set.Replicas, StoreDir: filepath.Join(set.Dir, "cluster"), SyncAlways: set.SyncAlways})
		if err != nil {
			return nil, err
		}
		sys.closers = append(sys.closers, c.Shutdown)
		natsURL = c.ClientURL(connServer)
	}
	if natsURL != "" {
		env = append(env, "COS_NATS_URL="+natsURL, "COS_NATS_REPLICAS="+strconv.Itoa(max(set.Replicas, 1)))
	} else if set.SyncAlways {
		env = append(env, "COS_NATS_SYNC=always")
	}
	if set.ReadSide {
		rs, stop, err := serveGRPC(func(s *grpc.Server) { cospb.RegisterReadSideHandlerServiceServer(s, sys.ReadSide) })
		if err != nil {
			return nil, err
		}
		sys.closers = append(sys.closers, stop)
		h, p, _ := net.SplitHostPort(rs)
		env = append(env, "COS_READ_SIDE_ENABLED=true", "COS_READ_SIDE_CONFIG__HOST__bench="+h, "COS_READ_SIDE_CONFIG__PORT__bench="+p)
	}
	cfg, _, err := config.FromEnv(append(env, set.Env...))
	if err != nil {
		return nil, err
	}
	roles := node.Roles{Gateway: true, Worker: true, Projector: set.ReadSide}
	info, stopNode, err := runNode(ctx, cfg, roles)
	if err != nil {
		return nil, err
	}
	sys.closers = append(sys.closers, stopNode)
	sys.Node = info
	if sys.NC, err = info.Connect("cosbench"); err != nil {
		return nil, err
	}
	sys.closers = append(sys.closers, sys.NC.Close)
	if sys.JS, err = jetstream.New(sys.NC); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(info.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	sys.closers = append(sys.closers, func() { _ = conn.Close() })
	sys.Client = cospb.NewChiefOfStateServiceClient(conn)
	return sys, nil
}

// runNode runs node.Run in the background until the returned stop is called.
func runNode(ctx context.Context, cfg config.Config, roles node.Roles) (node.Info, func(), error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return node.Info{}, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	ready := make(chan node.Info, 1)
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		done <- node.Run(ctx, cfg, node.Options{Roles: roles, Logger: log, Listener: lis, Ready: func(i node.Info) { ready <- i }})
	}()
	select {
	case info := <-ready:
		return info, func() { cancel(); <-done }, nil
	case err := <-done:
		cancel()
		return node.Info{}, nil, fmt.Errorf("node: %w", err)
	case <-time.After(60 * time.Second):
		cancel()
		return node.Info{}, nil, errors.New("node did not start within 60s")
	}
}

// LeaderServer is where a replicated setup's stream leaders are placed, and benchConnServer the server
// every connection of the benchmark uses: every append crosses a route to the leader, as it does for
// two of three clients of a real 3-node cluster. Left to chance, ours and the floor would each find
// their leader on their own server or not, and their ratio would measure that.
const (
	LeaderServer = "cos-1"
	connServer   = 0 // index of the server the connections use
)

// PlaceLeaders moves the leaders of the streams to the server named server and waits until they are
// there.
func PlaceLeaders(ctx context.Context, js jetstream.JetStream, server string, streams ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, name := range streams {
		for {
			s, err := js.Stream(ctx, name)
			if err != nil {
				return fmt.Errorf("place the leader of %s: %w", name, err)
			}
			if cl := s.CachedInfo().Cluster; cl != nil && cl.Leader == server {
				break
			} else if cl != nil && cl.Leader != "" {
				body := fmt.Sprintf(`{"placement":{"preferred":%q}}`, server)
				// An answer that the step-down is under way, or an error while the group elects: either
				// way the loop looks again.
				_, _ = js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+name, []byte(body))
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("place the leader of %s on %s: %w", name, server, ctx.Err())
			case <-time.After(100 * time.Millisecond): // polling a cluster's election, not a test
			}
		}
	}
	return nil
}
