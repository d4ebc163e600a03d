package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Floor is the irreducible work of one command, for comparison: a gRPC server whose ProcessCommand
// calls HandleCommand and HandleEvent over gRPC and appends the EventWrapper to JetStream with the
// expected-sequence header, the sequence kept in this process's memory (it assumes it is the only
// writer). No gateway hop, no worker queue, no cache, no idempotency, no validation.
type Floor struct {
	cospb.UnimplementedChiefOfStateServiceServer
	js      jetstream.JetStream
	handler cospb.WriteSideHandlerServiceClient

	mu       sync.Mutex
	entities map[string]*floorEntity
}

type floorEntity struct {
	mu  sync.Mutex
	seq uint64
	rev uint32
}

// FloorStream is the stream the floor appends to (beside the system's own, on the same server).
const FloorStream = "FLOOR"

// StartFloor serves the floor on a loopback port and returns its address and a stop function. On
// replicated streams it first places the leaders of the floor's and the system's streams on
// LeaderServer.
func StartFloor(ctx context.Context, js jetstream.JetStream, handlerAddr string, replicas int) (string, func(), error) {
	if err := createFloorStream(ctx, js, replicas); err != nil {
		return "", nil, err
	}
	if replicas > 1 {
		if err := PlaceLeaders(ctx, js, LeaderServer, layout.Default().EventStream(), FloorStream); err != nil {
			return "", nil, err
		}
	}
	conn, err := grpc.NewClient(handlerAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = conn.Close()
		return "", nil, err
	}
	f := &Floor{js: js, handler: cospb.NewWriteSideHandlerServiceClient(conn), entities: map[string]*floorEntity{}}
	srv := grpc.NewServer()
	cospb.RegisterChiefOfStateServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	return lis.Addr().String(), func() { srv.Stop(); _ = conn.Close() }, nil
}

// createFloorStream creates (or updates) the floor's stream, for the in-process floor and the
// distributed one alike.
func createFloorStream(ctx context.Context, js jetstream.JetStream, replicas int) error {
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: FloorStream, Subjects: []string{"floor.>"}, Storage: jetstream.FileStorage, Replicas: replicas,
	}); err != nil {
		return fmt.Errorf("floor stream: %w", err)
	}
	return nil
}

func (f *Floor) entity(token string) *floorEntity {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entities[token]
	if !ok {
		e = &floorEntity{}
		f.entities[token] = e
	}
	return e
}

// ProcessCommand does the floor's work for one single-event command.
func (f *Floor) ProcessCommand(ctx context.Context, req *cospb.ProcessCommandRequest) (*cospb.ProcessCommandResponse, error) {
	token := entity.Token(req.GetEntityId())
	e := f.entity(token)
	e.mu.Lock()
	defer e.mu.Unlock()
	resp, err := f.handler.HandleCommand(ctx, &cospb.HandleCommandRequest{Command: req.GetCommand(), PriorEventMeta: &cospb.MetaData{EntityId: req.GetEntityId(), RevisionNumber: e.rev}})
	if err != nil {
		return nil, err
	}
	if len(resp.GetEvents()) == 0 {
		return nil, status.Error(codes.FailedPrecondition, "floor: no event")
	}
	meta := &cospb.MetaData{EntityId: req.GetEntityId(), RevisionNumber: e.rev + 1, RevisionDate: timestamppb.Now()}
	er, err := f.handler.HandleEvent(ctx, &cospb.HandleEventRequest{Event: resp.GetEvents()[0], EventMeta: meta})
	if err != nil {
		return nil, err
	}
	data, err := proto.Marshal(&cospb.EventWrapper{Event: resp.GetEvents()[0], ResultingState: er.GetResultingState(), Meta: meta})
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg("floor." + token)
	msg.Data = data
	msg.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(e.seq, 10))
	ack, err := f.js.PublishMsg(ctx, msg)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) {
			return nil, status.Error(codes.Aborted, err.Error())
		}
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	e.seq, e.rev = ack.Sequence, e.rev+1
	return &cospb.ProcessCommandResponse{State: er.GetResultingState(), Meta: meta}, nil
}
