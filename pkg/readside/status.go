package readside

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/bucket"
	"github.com/cosnats/cosnats/pkg/layout"
)

// StatusStore keeps each read-side shard's failure state in a KV bucket, so operators see it from any
// gateway and a STOP survives restarts of the projector.
type StatusStore struct {
	kv     jetstream.KeyValue
	layout layout.Layout
}

// OpenStatus creates or binds the bucket.
func OpenStatus(ctx context.Context, js jetstream.JetStream, lay layout.Layout, replicas int) (*StatusStore, error) {
	kv, err := bucket.Open(ctx, js, jetstream.KeyValueConfig{
		Bucket:      lay.ReadSideBucket(),
		Description: "chief-of-state read-side shard states (failures, stops)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, err
	}
	return &StatusStore{kv: kv, layout: lay}, nil
}

// Get returns a shard's state; a shard that never failed has the zero state.
func (s *StatusStore) Get(ctx context.Context, readSide string, shard int) (*natspb.ReadSideShardState, error) {
	e, err := s.kv.Get(ctx, s.layout.ReadSideStateKey(readSide, shard))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &natspb.ReadSideShardState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state of %s/%d: %w", readSide, shard, err)
	}
	var st natspb.ReadSideShardState
	if err := proto.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("decode state of %s/%d: %w", readSide, shard, err)
	}
	return &st, nil
}

// Put records a shard's state.
func (s *StatusStore) Put(ctx context.Context, readSide string, shard int, st *natspb.ReadSideShardState) error {
	b, err := proto.Marshal(st)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, s.layout.ReadSideStateKey(readSide, shard), b); err != nil {
		return fmt.Errorf("record state of %s/%d: %w", readSide, shard, err)
	}
	return nil
}

// Clear forgets a shard's failures (after resume, restart or skip).
func (s *StatusStore) Clear(ctx context.Context, readSide string, shard int) error {
	err := s.kv.Delete(ctx, s.layout.ReadSideStateKey(readSide, shard))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("clear state of %s/%d: %w", readSide, shard, err)
	}
	return nil
}

// PutRestart records a shard's restart: when, and how many events it has to deliver again, so
// operators can follow the replay (cosctl readside replay).
func (s *StatusStore) PutRestart(ctx context.Context, readSide string, shard int, r *natspb.ReadSideRestart) error {
	b, err := proto.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, s.layout.ReadSideRestartKey(readSide, shard), b); err != nil {
		return fmt.Errorf("record restart of %s/%d: %w", readSide, shard, err)
	}
	return nil
}

// Restart returns a shard's last restart, nil when it was never restarted.
func (s *StatusStore) Restart(ctx context.Context, readSide string, shard int) (*natspb.ReadSideRestart, error) {
	e, err := s.kv.Get(ctx, s.layout.ReadSideRestartKey(readSide, shard))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read restart of %s/%d: %w", readSide, shard, err)
	}
	var r natspb.ReadSideRestart
	if err := proto.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("decode restart of %s/%d: %w", readSide, shard, err)
	}
	return &r, nil
}
