// Package readside delivers every persisted event to every configured read side, in order per entity
// (one durable JetStream consumer per read side and shard; events of different entities in parallel,
// up to the read side's MaxInFlight), at least once, with COS's failure policies; and lets operators
// inspect and steer the shards (ReadSideManagerService and this project's ReadSideStatusService).
package readside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/health"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/telemetry"
	"github.com/cosnats/cosnats/pkg/tlsfiles"
)

// Metadata keys sent with every HandleReadSide call, as COS sent them.
const (
	EntityIDKey = "x-cos-entity-id"
	EventTagKey = "x-cos-event-tag"
)

// Config are the projector's settings.
type Config struct {
	Layout    layout.Layout
	NumShards int
	ReadSides []config.ReadSide
	// Timing is the failure-policy timing shared by all read sides; each read side's Kind is its own.
	Timing Policy
	// DrainTimeout bounds how long Run waits, once its context ends, for read-side calls in flight to
	// finish (and be acknowledged); 0 = 25 s.
	DrainTimeout time.Duration
}

// DefaultTiming is the production timing: backoff from 1 s to 1 min, REPLAY_* 5 times 5 s apart.
var DefaultTiming = Policy{BackoffBase: time.Second, BackoffMax: time.Minute, ReplayDelay: 5 * time.Second, ReplayRetries: 5}

// Deps are the projector's collaborators.
type Deps struct {
	Conn   *nats.Conn // the projector's own connection: pulls, acks and control requests
	JS     jetstream.JetStream
	Status *StatusStore
	Logger *slog.Logger
	// Ready, when set, holds once every shard's consumer is bound.
	Ready *health.Condition
	// Metrics, when set, receives event outcomes, lag and the state of the shards this replica holds.
	Metrics *telemetry.Metrics
	// Tracer, when set, traces each delivery as a child of the command that stored the event (nil:
	// tracing off).
	Tracer trace.Tracer
	// DialOptions are added to the connections to the read-side handlers (instrumentation).
	DialOptions []grpc.DialOption
}

// Projector runs every (read side, shard). Any number of replicas may run; per shard the server pins
// one of them and hands the shard to another within PinnedTTL when it goes away.
type Projector struct {
	cfg  Config
	deps Deps
	conn *connWatch

	delivered, failures, restarts atomic.Uint64
	bound                         atomic.Int64
	runners                       map[string]*shardRunner                     // by control subject
	creds                         map[string]credentials.TransportCredentials // by read side id
}

// New builds a projector; it starts nothing.
func New(cfg Config, deps Deps) (*Projector, error) {
	if cfg.NumShards < 1 {
		return nil, errors.New("projector: NumShards must be >= 1")
	}
	if deps.Conn == nil || deps.JS == nil || deps.Status == nil {
		return nil, errors.New("projector: Conn, JS and Status are required")
	}
	for _, rs := range cfg.ReadSides {
		if err := rs.Validate(); err != nil {
			return nil, fmt.Errorf("projector: %w", err)
		}
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 25 * time.Second
	}
	// TLS material is read now, so a missing or mismatched file stops the start with a clear error.
	creds := make(map[string]credentials.TransportCredentials, len(cfg.ReadSides))
	for _, rs := range cfg.ReadSides {
		log := deps.Logger
		if log == nil {
			log = slog.Default()
		}
		c, err := tlsfiles.ClientCredentials(rs.UseTLS, tlsfiles.Options{
			CAFile: rs.TLS.CAFile, CertFile: rs.TLS.CertFile, KeyFile: rs.TLS.KeyFile, ServerName: rs.TLS.ServerName,
			OnError: func(err error) { log.Error("read-side client certificate", "read_side", rs.ID, "err", err) },
		})
		if err != nil {
			return nil, fmt.Errorf("read side %s TLS: %w", rs.ID, err)
		}
		creds[rs.ID] = c
	}
	return &Projector{cfg: cfg, deps: deps, creds: creds}, nil
}

// Delivered is the number of events acknowledged by read sides through this projector.
func (p *Projector) Delivered() uint64 { return p.delivered.Load() }

// Failures is the number of failed deliveries seen by this projector.
func (p *Projector) Failures() uint64 { return p.failures.Load() }

// Restarts is the number of delivery sessions this projector ended because of something it did not
// observe (a gap, a redelivery, a disconnect, a lost pin, an operator's change): each restarts the shard
// at its ack floor, so events handled but not yet acknowledged may be delivered again.
func (p *Projector) Restarts() uint64 { return p.restarts.Load() }

// Run delivers until ctx ends, then finishes the read-side calls in flight (within DrainTimeout),
// acknowledges those that succeeded and returns. It returns an error only when a consumer exists with
// settings this projector cannot use.
func (p *Projector) Run(ctx context.Context) error {
	p.conn = watchConn(p.deps.Conn)
	defer p.conn.stop()
	p.runners = make(map[string]*shardRunner)
	var all []*shardRunner
	for _, rs := range p.cfg.ReadSides {
		p.deps.Metrics.ReadSideKnown(rs.ID)
		conn, err := dial(rs, p.creds[rs.ID], p.deps.DialOptions)
		if err != nil {
			return err
		}
		defer conn.Close()
		client := cospb.NewReadSideHandlerServiceClient(conn)
		policy := p.cfg.Timing
		policy.Kind = rs.FailurePolicy
		for shard := range p.cfg.NumShards {
			s := newShardRunner(p, rs, shard, client, policy)
			p.runners[p.cfg.Layout.ReadSideControlSubject(rs.ID, shard)] = s
			all = append(all, s)
		}
	}
	ctl, err := p.deps.Conn.Subscribe(p.cfg.Layout.ReadSideControlSubjects(), p.onControl)
	if err != nil {
		return fmt.Errorf("subscribe to read-side control: %w", err)
	}
	defer func() { _ = ctl.Unsubscribe() }()
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range all {
		g.Go(func() error { return s.run(gctx) })
	}
	if p.deps.Metrics != nil {
		g.Go(func() error { p.report(gctx, all); return nil })
	}
	p.deps.Logger.Info("projector running", "read_sides", len(p.cfg.ReadSides), "shards", p.cfg.NumShards)
	err = g.Wait()
	if p.deps.Conn.IsConnected() {
		if ferr := p.deps.Conn.FlushTimeout(time.Second); ferr != nil && !errors.Is(ferr, nats.ErrConnectionClosed) {
			p.deps.Logger.Warn("flush acknowledgements", "err", ferr)
		}
	}
	return err
}

// onBound counts a runner whose consumer is bound; readiness holds once all are.
func (p *Projector) onBound() {
	if int(p.bound.Add(1)) == len(p.runners) && p.deps.Ready != nil {
		p.deps.Ready.OK()
	}
}

func dial(rs config.ReadSide, creds credentials.TransportCredentials, extra []grpc.DialOption) (*grpc.ClientConn, error) {
	target := net.JoinHostPort(rs.Host, strconv.Itoa(rs.Port))
	conn, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("read side %s at %s: %w", rs.ID, target, err)
	}
	return conn, nil
}

// connWatch tells sessions that the connection went down: a session that lived through a disconnect
// cannot know what the server sent meanwhile.
type connWatch struct {
	nc       *nats.Conn
	statuses chan nats.Status
	mu       sync.Mutex
	lost     chan struct{} // closed while (and once) disconnected; replaced on reconnect
	done     chan struct{}
}

func watchConn(nc *nats.Conn) *connWatch {
	w := &connWatch{nc: nc, statuses: nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED),
		lost: make(chan struct{}), done: make(chan struct{})}
	if !nc.IsConnected() {
		close(w.lost)
	}
	go func() {
		defer close(w.done)
		for s := range w.statuses {
			w.mu.Lock()
			select {
			case <-w.lost:
				if s == nats.CONNECTED && w.nc.IsConnected() {
					w.lost = make(chan struct{})
				}
			default:
				if s != nats.CONNECTED {
					close(w.lost)
				}
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// epoch is closed once the connection goes down after this call (or is down now).
func (w *connWatch) epoch() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lost
}

func (w *connWatch) stop() {
	w.nc.RemoveStatusListener(w.statuses)
	<-w.done
}

// HeaderValue makes an entity id fit in a gRPC metadata value, which must be printable ASCII: such ids
// pass unchanged, any other id is percent-encoded (UTF-8 bytes, like a URL path). MetaData.entity_id
// always carries the exact id.
func HeaderValue(id string) string {
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return url.PathEscape(id)
		}
	}
	return id
}
