package readside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Manager serves ReadSideManagerService (COS) and ReadSideStatusService (ours). It works on the
// consumers through the JetStream API, so it needs no projector in its process; every change it makes
// is stored in the consumer and survives restarts.
type Manager struct {
	cospb.UnimplementedReadSideManagerServiceServer
	natspb.UnimplementedReadSideStatusServiceServer

	js        jetstream.JetStream
	status    *StatusStore
	layout    layout.Layout
	numShards int
	readSides map[string]config.ReadSide
	order     []string
	log       *slog.Logger
}

// NewManager builds the manager for the configured read sides.
func NewManager(js jetstream.JetStream, st *StatusStore, lay layout.Layout, numShards int, readSides []config.ReadSide, log *slog.Logger) *Manager {
	m := &Manager{js: js, status: st, layout: lay, numShards: numShards, readSides: map[string]config.ReadSide{}, log: log}
	for _, rs := range readSides {
		m.readSides[rs.ID] = rs
		m.order = append(m.order, rs.ID)
	}
	return m
}

func (m *Manager) readSide(id string) (config.ReadSide, error) {
	rs, ok := m.readSides[id]
	if !ok {
		return config.ReadSide{}, status.Errorf(codes.NotFound, "read side %q not found", id)
	}
	return rs, nil
}

func (m *Manager) shard(n uint64) (int, error) {
	if n >= uint64(m.numShards) {
		return 0, status.Errorf(codes.InvalidArgument, "shard %d out of range: there are %d shards (0..%d)", n, m.numShards, m.numShards-1)
	}
	return int(n), nil
}

// forShards runs fn for one shard (byShard) or all of them.
func (m *Manager) forShards(ctx context.Context, id string, shard *uint64, fn func(context.Context, config.ReadSide, int) error) error {
	rs, err := m.readSide(id)
	if err != nil {
		return err
	}
	if shard != nil {
		s, err := m.shard(*shard)
		if err != nil {
			return err
		}
		return m.wrap(fn(ctx, rs, s))
	}
	for s := range m.numShards {
		if err := fn(ctx, rs, s); err != nil {
			return m.wrap(err)
		}
	}
	return nil
}

// wrap is the one place where this service's errors become statuses.
func (m *Manager) wrap(err error) error {
	if err == nil || errors.Is(err, errNothingToSkip) { // an answer, not a failure: see successful
		return err
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return status.FromContextError(err).Err()
	}
	m.log.Error("read-side management failed", "err", err)
	return status.Error(codes.Unavailable, "the event store is unavailable")
}

func (m *Manager) consumer(ctx context.Context, rs config.ReadSide, shard int) (jetstream.Consumer, *jetstream.ConsumerInfo, error) {
	c, err := Ensure(ctx, m.js, m.layout, rs, shard)
	if err != nil {
		return nil, nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("consumer info: %w", err)
	}
	return c, info, nil
}

// offset is COS's offset of a shard: the stream sequence of the last event the read side acknowledged.
func (m *Manager) offset(ctx context.Context, rs config.ReadSide, shard int) (*cospb.ReadSideOffset, error) {
	_, info, err := m.consumer(ctx, rs, shard)
	if err != nil {
		return nil, err
	}
	return &cospb.ReadSideOffset{ClusterShardNumber: uint64(shard), Offset: info.AckFloor.Stream}, nil
}

// GetLatestOffset implements ReadSideManagerService.
func (m *Manager) GetLatestOffset(ctx context.Context, req *cospb.GetLatestOffsetRequest) (*cospb.GetLatestOffsetResponse, error) {
	resp := &cospb.GetLatestOffsetResponse{}
	err := m.forShards(ctx, req.GetReadSideId(), nil, func(ctx context.Context, rs config.ReadSide, s int) error {
		o, err := m.offset(ctx, rs, s)
		if err == nil {
			resp.Offsets = append(resp.Offsets, o)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// GetLatestOffsetByShard implements ReadSideManagerService.
func (m *Manager) GetLatestOffsetByShard(ctx context.Context, req *cospb.GetLatestOffsetByShardRequest) (*cospb.GetLatestOffsetByShardResponse, error) {
	resp := &cospb.GetLatestOffsetByShardResponse{}
	shard := req.GetClusterShardNumber()
	err := m.forShards(ctx, req.GetReadSideId(), &shard, func(ctx context.Context, rs config.ReadSide, s int) error {
		o, err := m.offset(ctx, rs, s)
		resp.Offsets = o
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (m *Manager) pause(ctx context.Context, rs config.ReadSide, shard int) error {
	if _, _, err := m.consumer(ctx, rs, shard); err != nil {
		return err
	}
	_, err := m.js.PauseConsumer(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(rs.ID, shard), Forever)
	return err
}

// resume continues a paused or stopped shard; its failure record is cleared.
func (m *Manager) resume(ctx context.Context, rs config.ReadSide, shard int) error {
	if _, _, err := m.consumer(ctx, rs, shard); err != nil {
		return err
	}
	if err := m.status.Clear(ctx, rs.ID, shard); err != nil {
		return err
	}
	_, err := m.js.ResumeConsumer(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(rs.ID, shard))
	return err
}

// restart replays the shard from the first event.
func (m *Manager) restart(ctx context.Context, rs config.ReadSide, shard int) error {
	if _, _, err := m.consumer(ctx, rs, shard); err != nil {
		return err
	}
	if err := m.status.Clear(ctx, rs.ID, shard); err != nil {
		return err
	}
	_, err := m.js.ResetConsumerToSequence(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(rs.ID, shard), 1)
	return err
}

// errNothingToSkip is reported by skip on a shard that has delivered everything.
var errNothingToSkip = errors.New("nothing to skip")

// skip skips exactly the event the shard is stuck on (delivered and not acknowledged), or, when it is
// not stuck, the next event it would deliver.
func (m *Manager) skip(ctx context.Context, rs config.ReadSide, shard int) error {
	_, info, err := m.consumer(ctx, rs, shard)
	if err != nil {
		return err
	}
	// The stuck event is the one on record as failed, when delivery has not passed it; otherwise
	// the shard's first event after the ack floor (where the projector resets a failed shard to).
	var target uint64
	st, err := m.status.Get(ctx, rs.ID, shard)
	if err != nil {
		return err
	}
	if seq := st.GetFailedSequence(); seq > info.AckFloor.Stream && (st.GetFailing() || st.GetStopped()) {
		target = seq
	} else {
		s, err := m.js.Stream(ctx, m.layout.EventStream())
		if err != nil {
			return fmt.Errorf("event stream: %w", err)
		}
		next, err := s.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(m.layout.ShardEventSubjects(shard)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return errNothingToSkip
		}
		if err != nil {
			return fmt.Errorf("find the next event: %w", err)
		}
		target = next.Sequence
	}
	if err := m.status.Clear(ctx, rs.ID, shard); err != nil {
		return err
	}
	m.log.Warn("skipping a read-side event on request", "read_side", rs.ID, "shard", shard, "sequence", target)
	_, err = m.js.ResetConsumerToSequence(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(rs.ID, shard), target+1)
	return err
}

// successful turns an operation's error into COS's {successful} answer: "nothing to skip" is an
// unsuccessful answer, not an error; everything else is an error status.
func successful(err error) (bool, error) {
	if errors.Is(err, errNothingToSkip) {
		return false, nil
	}
	return err == nil, err
}

func (m *Manager) do(ctx context.Context, id string, shard *uint64, op func(context.Context, config.ReadSide, int) error) (bool, error) {
	var skipped int
	err := m.forShards(ctx, id, shard, func(ctx context.Context, rs config.ReadSide, s int) error {
		err := op(ctx, rs, s)
		if errors.Is(err, errNothingToSkip) && shard == nil {
			skipped++ // skipping on all shards: shards with nothing to skip are fine
			return nil
		}
		return err
	})
	if shard == nil && skipped == m.numShards {
		return false, nil
	}
	return successful(err)
}

func ptr(v uint64) *uint64 { return &v }

// RestartReadSide implements ReadSideManagerService.
func (m *Manager) RestartReadSide(ctx context.Context, req *cospb.RestartReadSideRequest) (*cospb.RestartReadSideResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), nil, m.restart)
	if err != nil {
		return nil, err
	}
	return &cospb.RestartReadSideResponse{Successful: ok}, nil
}

// RestartReadSideByShard implements ReadSideManagerService.
func (m *Manager) RestartReadSideByShard(ctx context.Context, req *cospb.RestartReadSideByShardRequest) (*cospb.RestartReadSideByShardResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), ptr(req.GetClusterShardNumber()), m.restart)
	if err != nil {
		return nil, err
	}
	return &cospb.RestartReadSideByShardResponse{Successful: ok}, nil
}

// PauseReadSide implements ReadSideManagerService.
func (m *Manager) PauseReadSide(ctx context.Context, req *cospb.PauseReadSideRequest) (*cospb.PauseReadSideResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), nil, m.pause)
	if err != nil {
		return nil, err
	}
	return &cospb.PauseReadSideResponse{Successful: ok}, nil
}

// PauseReadSideByShard implements ReadSideManagerService.
func (m *Manager) PauseReadSideByShard(ctx context.Context, req *cospb.PauseReadSideByShardRequest) (*cospb.PauseReadSideByShardResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), ptr(req.GetClusterShardNumber()), m.pause)
	if err != nil {
		return nil, err
	}
	return &cospb.PauseReadSideByShardResponse{Successful: ok}, nil
}

// ResumeReadSide implements ReadSideManagerService.
func (m *Manager) ResumeReadSide(ctx context.Context, req *cospb.ResumeReadSideRequest) (*cospb.ResumeReadSideResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), nil, m.resume)
	if err != nil {
		return nil, err
	}
	return &cospb.ResumeReadSideResponse{Successful: ok}, nil
}

// ResumeReadSideByShard implements ReadSideManagerService.
func (m *Manager) ResumeReadSideByShard(ctx context.Context, req *cospb.ResumeReadSideByShardRequest) (*cospb.ResumeReadSideByShardResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), ptr(req.GetClusterShardNumber()), m.resume)
	if err != nil {
		return nil, err
	}
	return &cospb.ResumeReadSideByShardResponse{Successful: ok}, nil
}

// SkipOffset implements ReadSideManagerService: on every shard, skip the stuck (or next) event.
func (m *Manager) SkipOffset(ctx context.Context, req *cospb.SkipOffsetRequest) (*cospb.SkipOffsetResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), nil, m.skip)
	if err != nil {
		return nil, err
	}
	return &cospb.SkipOffsetResponse{Successful: ok}, nil
}

// SkipOffsetByShard implements ReadSideManagerService.
func (m *Manager) SkipOffsetByShard(ctx context.Context, req *cospb.SkipOffsetByShardRequest) (*cospb.SkipOffsetByShardResponse, error) {
	ok, err := m.do(ctx, req.GetReadSideId(), ptr(req.GetClusterShardNumber()), m.skip)
	if err != nil {
		return nil, err
	}
	return &cospb.SkipOffsetByShardResponse{Successful: ok}, nil
}

// GetReadSideStatus implements ReadSideStatusService.
func (m *Manager) GetReadSideStatus(ctx context.Context, req *natspb.GetReadSideStatusRequest) (*natspb.GetReadSideStatusResponse, error) {
	ids := m.order
	if id := req.GetReadSideId(); id != "" {
		if _, err := m.readSide(id); err != nil {
			return nil, err
		}
		ids = []string{id}
	}
	resp := &natspb.GetReadSideStatusResponse{}
	for _, id := range ids {
		err := m.forShards(ctx, id, nil, func(ctx context.Context, rs config.ReadSide, s int) error {
			_, info, err := m.consumer(ctx, rs, s)
			if err != nil {
				return err
			}
			st, err := m.status.Get(ctx, rs.ID, s)
			if err != nil {
				return err
			}
			resp.Shards = append(resp.Shards, &natspb.ReadSideShardStatus{
				ReadSideId:         rs.ID,
				ClusterShardNumber: uint64(s),
				Offset:             info.AckFloor.Stream,
				Pending:            info.NumPending + uint64(info.NumAckPending),
				Paused:             pausedByOperator(info),
				Stopped:            st.GetStopped(),
				Failing:            st.GetFailing(),
				LastError:          st.GetLastError(),
				LastErrorTime:      st.GetLastErrorTime(),
				FailedSequence:     st.GetFailedSequence(),
				Attempts:           st.GetAttempts(),
			})
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// pausedByOperator tells a pause until resumed (PauseReadSide, or a stop by the failure policy)
// from the projector's pause between retries, which ends by itself.
func pausedByOperator(info *jetstream.ConsumerInfo) bool {
	return info.Paused && info.Config.PauseUntil != nil && !info.Config.PauseUntil.Before(Forever)
}
