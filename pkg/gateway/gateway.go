// Package gateway serves ChiefOfStateService: it validates each call, sends commands to the workers
// over NATS request/reply on the entity's command subject, and reads state straight from the event log.
// It is the one place where this process's errors become gRPC statuses.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/command"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/subscription"
	"github.com/cosnats/cosnats/pkg/telemetry"
	"github.com/cosnats/cosnats/pkg/worker"
)

// CommandIDKey is the gRPC metadata key of the idempotency key. The gateway echoes the id it used in
// the response header of the same name (generating one when the caller sent none).
const CommandIDKey = worker.CommandIDKey

// Config are the gateway's settings.
type Config struct {
	Layout            layout.Layout
	NumShards         int
	CommandTimeout    time.Duration
	MaxCommandBytes   int
	PropagatedHeaders []string
	PersistedHeaders  []string
	// Subscriptions configures Subscribe and SubscribeAll (its Layout is set from Layout).
	Subscriptions SubscriptionConfig
}

// Dispatcher delivers a CommandRequest to a worker and returns its reply: over NATS
// (NATSDispatcher), or straight to a worker in the same process (*worker.Worker).
type Dispatcher interface {
	Dispatch(ctx context.Context, subject string, req *natspb.CommandRequest) (*natspb.CommandReply, error)
}

// NATSDispatcher sends commands as NATS requests, with the caller's trace context in the message
// headers: to the worker that owns the entity when Placement names one, else to the queue group on the
// command subject.
type NATSDispatcher struct {
	Conn   *nats.Conn
	Tracer trace.Tracer // nil: no span for the hop
	// Template is the command subjects' wildcard form, the span's destination template.
	Template string
	// Layout names the workers' own command subjects (used with Placement).
	Layout layout.Layout
	// Placement picks an entity's worker; nil: every command goes to the queue group.
	Placement Placement
	// Local is the worker in this process, if any, and LocalID its id: it takes the commands it owns
	// and, when no worker is known or the owner does not answer, all of them, without a NATS round trip.
	Local   Dispatcher
	LocalID string
}

// Placement picks the worker that owns an entity (placement.View).
type Placement interface {
	// Owner returns the worker that owns the entity with this command subject, false if none is known.
	Owner(commandSubject string) (workerID string, ok bool)
	// Down says worker id did not answer (no responder): forget it until it is heard again.
	Down(workerID string)
}

// Dispatch implements Dispatcher.
func (d NATSDispatcher) Dispatch(ctx context.Context, subject string, req *natspb.CommandRequest) (*natspb.CommandReply, error) {
	var data []byte
	if d.Placement != nil {
		if id, ok := d.Placement.Owner(subject); ok {
			if d.Local != nil && id == d.LocalID {
				return d.Local.Dispatch(ctx, subject, req)
			}
			var err error
			if data, err = encodeRequest(req); err != nil {
				return nil, err
			}
			reply, err := d.request(ctx, d.Layout.WorkerCommandSubject(id, subject), data)
			// No responder: the worker is gone and the command reached no one, so it may go elsewhere.
			if !errors.Is(err, nats.ErrNoResponders) {
				return reply, err
			}
			d.Placement.Down(id)
		}
	}
	if d.Local != nil {
		return d.Local.Dispatch(ctx, subject, req)
	}
	if data == nil {
		var err error
		if data, err = encodeRequest(req); err != nil {
			return nil, err
		}
	}
	return d.request(ctx, subject, data)
}

func encodeRequest(req *natspb.CommandRequest) ([]byte, error) {
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "command cannot be encoded: %v", err)
	}
	return data, nil
}

// request sends one encoded command on subject and decodes the reply.
func (d NATSDispatcher) request(ctx context.Context, subject string, data []byte) (*natspb.CommandReply, error) {
	msg := nats.NewMsg(subject)
	msg.Data = data
	if d.Tracer != nil {
		var span trace.Span
		ctx, span = telemetry.StartMessaging(ctx, d.Tracer, telemetry.OpSend+" "+d.Template, telemetry.OpSend,
			trace.SpanKindProducer, d.Template, subject)
		defer span.End()
		telemetry.Inject(ctx, msg.Header)
	}
	resp, err := d.Conn.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, err
	}
	var reply natspb.CommandReply
	if err := proto.Unmarshal(resp.Data, &reply); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadReply, err)
	}
	return &reply, nil
}

var errBadReply = errors.New("undecodable reply from a worker")

// Reader reads entity heads; the event log implements it.
type Reader interface {
	// Current is the entity's head including every command acknowledged before the call.
	Current(ctx context.Context, k entity.Key) (eventlog.Head, error)
}

// Service implements cospb.ChiefOfStateServiceServer. It answers UNAVAILABLE until Bind gives it the
// workers and the event log: the gateway serves (and its health says NOT_SERVING) while it waits for
// NATS.
type Service struct {
	cospb.UnimplementedChiefOfStateServiceServer
	cfg     Config
	log     *slog.Logger
	metrics *telemetry.Metrics
	backend atomic.Pointer[backend]
	subs    *subscription.Hub
}

type backend struct {
	dispatch Dispatcher
	reader   Reader
}

// New builds the service; it answers once bound. metrics may be nil.
func New(cfg Config, log *slog.Logger, metrics *telemetry.Metrics) *Service {
	return &Service{cfg: cfg, log: log, metrics: metrics, subs: newHub(cfg, log)}
}

// Bind gives the service what it serves with.
func (s *Service) Bind(dispatch Dispatcher, reader Reader) {
	s.backend.Store(&backend{dispatch: dispatch, reader: reader})
}

var errNotReady = status.Error(codes.Unavailable, "chief-of-state is starting: not connected to NATS JetStream yet; the command was not processed")

// ProcessCommand implements the COS RPC.
func (s *Service) ProcessCommand(ctx context.Context, req *cospb.ProcessCommandRequest) (*cospb.ProcessCommandResponse, error) {
	start := time.Now()
	resp, outcome, err := s.processCommand(ctx, req)
	s.metrics.Command(ctx, outcome, time.Since(start))
	return resp, err
}

// processCommand is ProcessCommand, with the outcome it counts as.
func (s *Service) processCommand(ctx context.Context, req *cospb.ProcessCommandRequest) (*cospb.ProcessCommandResponse, string, error) {
	b := s.backend.Load()
	if b == nil {
		return nil, telemetry.OutcomeUnavailable, errNotReady
	}
	md, _ := metadata.FromIncomingContext(ctx)
	// Tell the caller which id to retry with, before anything can fail.
	resp, err := s.send(ctx, b, req, md, func(id string) { _ = grpc.SetHeader(ctx, metadata.Pairs(CommandIDKey, id)) })
	if err != nil {
		return nil, errorOutcome(err), err
	}
	return resp.response, resp.outcome, nil
}

// Result is the outcome of a command that arrived another way than the gRPC API (the NATS intakes).
type Result struct {
	Response  *cospb.ProcessCommandResponse // nil when Err is set
	CommandID string                        // the id the command ran with ("" when it was refused before one was chosen)
	Replayed  bool                          // the id had already been applied: Response is its earlier result
	// HandlerError is set when Err is the write handler's own answer (not this service's).
	HandlerError bool
	// Err is a gRPC status error exactly as ProcessCommand would have returned it.
	Err error
}

// Run runs a command exactly as ProcessCommand does (validation, idempotency key in md under
// CommandIDKey, propagated and persisted headers picked from md, errors, metrics) for the NATS
// intakes. md keys must be lowercase.
func (s *Service) Run(ctx context.Context, req *cospb.ProcessCommandRequest, md metadata.MD) Result {
	start := time.Now()
	var res Result
	b := s.backend.Load()
	if b == nil {
		res.Err = errNotReady
		s.metrics.Command(ctx, telemetry.OutcomeUnavailable, time.Since(start))
		return res
	}
	a, err := s.send(ctx, b, req, md, func(id string) { res.CommandID = id })
	outcome := a.outcome
	if err != nil {
		outcome = errorOutcome(err)
	}
	s.metrics.Command(ctx, outcome, time.Since(start))
	res.Response, res.Replayed, res.Err = a.response, outcome == telemetry.OutcomeReplayed && err == nil, err
	_, res.HandlerError = err.(errHandler)
	return res
}

// answer is a worker's successful reply.
type answer struct {
	response *cospb.ProcessCommandResponse
	outcome  string
}

// errHandler marks a status that is the write handler's answer.
type errHandler struct{ st *status.Status }

func (e errHandler) Error() string              { return e.st.Err().Error() }
func (e errHandler) GRPCStatus() *status.Status { return e.st }

// errorOutcome classifies a failed command for cos_commands_total.
func errorOutcome(err error) string {
	if _, ok := err.(errHandler); ok {
		return telemetry.OutcomeHandlerError
	}
	switch status.Code(err) {
	case codes.InvalidArgument:
		return telemetry.OutcomeInvalid
	case codes.Aborted:
		return telemetry.OutcomeAborted
	case codes.AlreadyExists:
		return telemetry.OutcomeReplayed // recognised by the stream's deduplication: applied before
	case codes.Unknown, codes.Canceled:
		return telemetry.OutcomeUnknown
	default: // UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL: not processed
		return telemetry.OutcomeUnavailable
	}
}

// send validates a command, hands it to a worker and maps its reply. onID learns the command id once
// it is chosen.
func (s *Service) send(ctx context.Context, b *backend, req *cospb.ProcessCommandRequest, md metadata.MD, onID func(string)) (answer, error) {
	key, err := entity.NewKey(req.GetEntityId(), s.cfg.NumShards)
	if err != nil {
		return answer{}, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetCommand().GetTypeUrl() == "" {
		return answer{}, status.Error(codes.InvalidArgument, "missing command")
	}
	if n := proto.Size(req.GetCommand()); n > s.cfg.MaxCommandBytes {
		return answer{}, status.Errorf(codes.InvalidArgument, "command is %d bytes, the limit is %d", n, s.cfg.MaxCommandBytes)
	}
	commandID, generated := "", false
	if ids := md.Get(CommandIDKey); len(ids) > 0 {
		if err := command.ValidateCommandID(ids[0]); err != nil {
			return answer{}, status.Errorf(codes.InvalidArgument, "%s: %v", CommandIDKey, err)
		}
		commandID = ids[0]
	} else {
		commandID, generated = nuid.Next(), true
	}
	onID(commandID)

	deadline := time.Now().Add(s.cfg.CommandTimeout)
	if d, ok := ctx.Deadline(); ok && d.Add(-worker.ReplyGrace).Before(deadline) {
		// Leave room for an append that starts just before the deadline to be reported in time.
		deadline = d.Add(-worker.ReplyGrace)
		if time.Until(deadline) <= 0 {
			deadline = d
		}
	}
	creq := &natspb.CommandRequest{
		EntityId:           key.ID,
		Command:            req.GetCommand(),
		PropagatedHeaders:  command.PickHeaders(md, s.cfg.PropagatedHeaders),
		PersistedHeaders:   command.PickHeaders(md, s.cfg.PersistedHeaders),
		CommandId:          commandID,
		DeadlineUnixNano:   deadline.UnixNano(),
		CommandIdGenerated: generated,
	}
	wctx, cancel := context.WithDeadline(ctx, deadline.Add(worker.ReplyGrace))
	defer cancel()
	reply, err := b.dispatch.Dispatch(wctx, s.cfg.Layout.CommandSubject(key), creq)
	if err != nil {
		return answer{}, s.requestError(ctx, commandID, err)
	}
	switch out := reply.GetOutcome().(type) {
	case *natspb.CommandReply_Response:
		if reply.GetReplayed() {
			return answer{out.Response, telemetry.OutcomeReplayed}, nil
		}
		return answer{out.Response, telemetry.OutcomeOK}, nil
	case *natspb.CommandReply_Status:
		var st spb.Status
		if err := proto.Unmarshal(out.Status, &st); err != nil {
			return answer{}, status.Errorf(codes.Unknown, "undecodable error from a worker: the outcome of command %s is unknown", commandID)
		}
		if reply.GetHandlerError() {
			return answer{}, errHandler{status.FromProto(&st)}
		}
		return answer{}, status.FromProto(&st).Err()
	}
	return answer{}, status.Errorf(codes.Unknown, "empty reply from a worker: the outcome of command %s is unknown", commandID)
}

// requestError maps a failed NATS request. Only a request that never reached a worker ("no
// responders", or refused by the connection before it was sent) is certain to have done nothing.
func (s *Service) requestError(ctx context.Context, commandID string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err // the dispatcher's own answer (a request it could not encode)
	}
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, worker.ErrStopped):
		return status.Error(codes.Unavailable, "no worker is available; the command was not processed")
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionDraining):
		return status.Error(codes.Unavailable, "the gateway is not connected to NATS; the command was not processed")
	case ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
		return status.Errorf(codes.Canceled, "call cancelled: the outcome of command %s is unknown; retry with the same %s", commandID, CommandIDKey)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return status.Errorf(codes.Unknown, "no reply from a worker in time: the outcome of command %s is unknown; retry with the same %s to learn it", commandID, CommandIDKey)
	}
	s.log.ErrorContext(ctx, "command request failed", "command_id", commandID, "err", err)
	return status.Errorf(codes.Unknown, "sending the command failed: the outcome of command %s is unknown; retry with the same %s", commandID, CommandIDKey)
}

// GetState implements the COS RPC. It sees every command acknowledged before it was called, through
// whatever leader changes (eventlog.Log.Current); when it cannot be sure, it fails rather than answer
// an older state.
func (s *Service) GetState(ctx context.Context, req *cospb.GetStateRequest) (*cospb.GetStateResponse, error) {
	b := s.backend.Load()
	if b == nil {
		return nil, status.Error(codes.Unavailable, "chief-of-state is starting: not connected to NATS JetStream yet")
	}
	key, err := entity.NewKey(req.GetEntityId(), s.cfg.NumShards)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	head, err := b.reader.Current(ctx, key)
	if err != nil {
		if ctx.Err() != nil {
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		s.log.ErrorContext(ctx, "read state", "entity", key.ID, "err", err)
		return nil, status.Error(codes.Unavailable, "the event store is unavailable: the current state could not be confirmed by a quorum of its replicas; retry")
	}
	if head.Seq == 0 {
		return nil, status.Error(codes.NotFound, fmt.Sprintf("entity %q not found", key.ID))
	}
	return &cospb.GetStateResponse{State: head.State, Meta: head.Meta}, nil
}
