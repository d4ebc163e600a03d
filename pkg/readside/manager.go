package readside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Manager serves ReadSideManagerService (COS) and ReadSideStatusService (ours). It needs no read-side
// configuration and no projector in its process: the read sides are those whose consumers exist (the
// projectors own the consumers and their settings), and it works on them through the JetStream API.
// Every change it makes is stored in the consumer and survives restarts; after pausing, restarting or
// skipping a shard it makes sure the projector delivering it has taken the change in (see settle).
type Manager struct {
	cospb.UnimplementedReadSideManagerServiceServer
	natspb.UnimplementedReadSideStatusServiceServer

	layout    layout.Layout
	numShards int
	log       *slog.Logger
	backend   atomic.Pointer[managerBackend]
}

type managerBackend struct {
	js     jetstream.JetStream
	status *StatusStore
}

// NewManager builds the manager; it answers UNAVAILABLE until Bind.
func NewManager(lay layout.Layout, numShards int, log *slog.Logger) *Manager {
	return &Manager{layout: lay, numShards: numShards, log: log}
}

// Bind gives the manager what it works with.
func (m *Manager) Bind(js jetstream.JetStream, status *StatusStore) {
	m.backend.Store(&managerBackend{js: js, status: status})
}

func (m *Manager) bound() *managerBackend { return m.backend.Load() }

var errManagerNotReady = status.Error(codes.Unavailable, "chief-of-state is starting: not connected to NATS JetStream yet")

// readSides lists the read sides whose consumers exist, with their shards, sorted.
func (m *Manager) readSides(ctx context.Context) (map[string][]int, error) {
	b := m.bound()
	if b == nil {
		return nil, errManagerNotReady
	}
	s, err := b.js.Stream(ctx, m.layout.EventStream())
	if err != nil {
		return nil, fmt.Errorf("event stream: %w", err)
	}
	out := make(map[string][]int)
	names := s.ConsumerNames(ctx)
	for name := range names.Name() {
		if id, shard, ok := m.layout.ParseReadSideConsumer(name); ok && shard < m.numShards {
			out[id] = append(out[id], shard)
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	for _, shards := range out {
		sort.Ints(shards)
	}
	return out, nil
}

func (m *Manager) shard(n uint64) (int, error) {
	if n >= uint64(m.numShards) {
		return 0, status.Errorf(codes.InvalidArgument, "shard %d out of range: there are %d shards (0..%d)", n, m.numShards, m.numShards-1)
	}
	return int(n), nil
}

// forShards runs fn for one shard (byShard) or all of them.
func (m *Manager) forShards(ctx context.Context, id string, shard *uint64, fn func(context.Context, string, int) error) error {
	if shard != nil {
		if _, err := m.shard(*shard); err != nil {
			return err
		}
	}
	all, err := m.readSides(ctx)
	if err != nil {
		return m.wrap(err)
	}
	shards, ok := all[id]
	if !ok {
		return status.Errorf(codes.NotFound, "read side %q not found: no projector has created its consumers yet", id)
	}
	if shard != nil {
		s := int(*shard)
		if !slices.Contains(shards, s) {
			return status.Errorf(codes.Unavailable, "read side %q has no consumer for shard %d yet: a projector creates it", id, s)
		}
		return m.wrap(fn(ctx, id, s))
	}
	for _, s := range shards {
		if err := fn(ctx, id, s); err != nil {
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

func (m *Manager) consumer(ctx context.Context, id string, shard int) (*jetstream.ConsumerInfo, error) {
	c, err := m.bound().js.Consumer(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(id, shard))
	if err != nil {
		return nil, fmt.Errorf("consumer of %s/%d: %w", id, shard, err)
	}
	return c.CachedInfo(), nil
}

// offset is COS's offset of a shard: the stream sequence of the last event the read side acknowledged.
func (m *Manager) offset(ctx context.Context, id string, shard int) (*cospb.ReadSideOffset, error) {
	info, err := m.consumer(ctx, id, shard)
	if err != nil {
		return nil, err
	}
	return &cospb.ReadSideOffset{ClusterShardNumber: uint64(shard), Offset: info.AckFloor.Stream}, nil
}

// GetLatestOffset implements ReadSideManagerService.
func (m *Manager) GetLatestOffset(ctx context.Context, req *cospb.GetLatestOffsetRequest) (*cospb.GetLatestOffsetResponse, error) {
	resp := &cospb.GetLatestOffsetResponse{}
	err := m.forShards(ctx, req.GetReadSideId(), nil, func(ctx context.Context, id string, s int) error {
		o, err := m.offset(ctx, id, s)
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
	err := m.forShards(ctx, req.GetReadSideId(), &shard, func(ctx context.Context, id string, s int) error {
		o, err := m.offset(ctx, id, s)
		resp.Offsets = o
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

func (m *Manager) pause(ctx context.Context, id string, shard int) error {
	if _, err := m.bound().js.PauseConsumer(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(id, shard), Forever); err != nil {
		return err
	}
	return m.settle(ctx, id, shard)
}

// resume continues a paused or stopped shard; its failure record is cleared.
func (m *Manager) resume(ctx context.Context, id string, shard int) error {
	b := m.bound()
	if err := b.status.Clear(ctx, id, shard); err != nil {
		return err
	}
	_, err := b.js.ResumeConsumer(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(id, shard))
	return err
}

// restart replays the shard from the first event.
func (m *Manager) restart(ctx context.Context, id string, shard int) error {
	b := m.bound()
	if err := b.status.Clear(ctx, id, shard); err != nil {
		return err
	}
	at := timestamppb.Now()
	reset, err := b.js.ResetConsumerToSequence(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(id, shard), 1)
	if err != nil {
		return err
	}
	// The reset's answer counts what the shard must deliver again, before the projector took any.
	var pending uint64
	if reset.ConsumerInfo != nil {
		pending = reset.NumPending + uint64(reset.NumAckPending)
	}
	// Recorded after the projector confirmed, so the reset reaches it as soon as possible.
	if err := m.settle(ctx, id, shard); err != nil {
		return err
	}
	return b.status.PutRestart(ctx, id, shard, &natspb.ReadSideRestart{At: at, Pending: pending})
}

// errNothingToSkip is reported by skip on a shard that has delivered everything.
var errNothingToSkip = errors.New("nothing to skip")

// skip skips exactly the event the shard is stuck on (delivered and not acknowledged), or, when it is
// not stuck, the next event it would deliver.
func (m *Manager) skip(ctx context.Context, id string, shard int) error {
	b := m.bound()
	info, err := m.consumer(ctx, id, shard)
	if err != nil {
		return err
	}
	// The stuck event is the one on record as failed, when delivery has not passed it; otherwise
	// the shard's first event after the ack floor (where the projector resets a failed shard to).
	var target uint64
	st, err := b.status.Get(ctx, id, shard)
	if err != nil {
		return err
	}
	if seq := st.GetFailedSequence(); seq > info.AckFloor.Stream && (st.GetFailing() || st.GetStopped()) {
		target = seq
	} else {
		// From the leader: a follower that is behind could name no event, or an older one.
		next, err := eventlog.LeaderGet(ctx, b.js.Conn(), m.layout.EventStream(),
			eventlog.GetRequest{Seq: info.AckFloor.Stream + 1, NextFor: m.layout.ShardEventSubjects(shard)})
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return errNothingToSkip
		}
		if err != nil {
			return fmt.Errorf("find the next event: %w", err)
		}
		target = next.Sequence
	}
	if err := b.status.Clear(ctx, id, shard); err != nil {
		return err
	}
	m.log.Warn("skipping a read-side event on request", "read_side", id, "shard", shard, "sequence", target)
	if _, err := b.js.ResetConsumerToSequence(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(id, shard), target+1); err != nil {
		return err
	}
	return m.settle(ctx, id, shard)
}

// successful turns an operation's error into COS's {successful} answer: "nothing to skip" is an
// unsuccessful answer, not an error; everything else is an error status.
func successful(err error) (bool, error) {
	if errors.Is(err, errNothingToSkip) {
		return false, nil
	}
	return err == nil, err
}

func (m *Manager) do(ctx context.Context, id string, shard *uint64, op func(context.Context, string, int) error) (bool, error) {
	var skipped, shards int
	err := m.forShards(ctx, id, shard, func(ctx context.Context, id string, s int) error {
		shards++
		err := op(ctx, id, s)
		if errors.Is(err, errNothingToSkip) && shard == nil {
			skipped++ // skipping on all shards: shards with nothing to skip are fine
			return nil
		}
		return err
	})
	if shard == nil && err == nil && skipped == shards {
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
	all, err := m.readSides(ctx)
	if err != nil {
		return nil, m.wrap(err)
	}
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if id := req.GetReadSideId(); id != "" {
		if _, ok := all[id]; !ok {
			return nil, status.Errorf(codes.NotFound, "read side %q not found: no projector has created its consumers yet", id)
		}
		ids = []string{id}
	}
	b := m.bound()
	resp := &natspb.GetReadSideStatusResponse{}
	for _, id := range ids {
		err := m.forShards(ctx, id, nil, func(ctx context.Context, id string, s int) error {
			info, err := m.consumer(ctx, id, s)
			if err != nil {
				return err
			}
			st, err := b.status.Get(ctx, id, s)
			if err != nil {
				return err
			}
			last, err := b.status.Restart(ctx, id, s)
			if err != nil {
				return err
			}
			resp.Shards = append(resp.Shards, &natspb.ReadSideShardStatus{
				RestartedAt:        last.GetAt(),
				ReplayTotal:        last.GetPending(),
				ReadSideId:         id,
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
