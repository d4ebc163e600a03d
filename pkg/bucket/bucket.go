// Package bucket opens the JetStream KV buckets this project keeps (snapshots, read-side states): it
// binds an existing bucket first and creates it only when missing, so any number of processes may start
// at once, and it refuses a bucket whose replicas or storage disagree with this process.
package bucket

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/layout"
)

// Open binds the bucket cfg describes, creating it when it does not exist. An existing bucket must have
// cfg's replicas and storage; otherwise the error wraps layout.ErrMismatch.
func Open(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) { // another process won the race
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	var errs []error
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
		got := s.StreamInfo().Config
		replicas := max(cfg.Replicas, 1)
		if got.Replicas != replicas {
			errs = append(errs, fmt.Errorf("replicas is %d, COS_NATS_REPLICAS says %d (edit the bucket's stream KV_%s first, e.g. `nats stream edit KV_%s --replicas %d`)",
				got.Replicas, replicas, cfg.Bucket, cfg.Bucket, replicas))
		}
		if got.Storage != cfg.Storage {
			errs = append(errs, fmt.Errorf("storage is %v, needs %v", got.Storage, cfg.Storage))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: bucket %s exists with settings this process cannot use: %w", layout.ErrMismatch, cfg.Bucket, errors.Join(errs...))
	}
	return kv, nil
}
