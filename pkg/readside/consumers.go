package readside

import (
	"github.com/cosnats/cosnats/pkg/pinpull"

	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/config"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Forever is how long "paused" and "stopped" last: until an operator resumes the shard.
var Forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// PinnedTTL is how long a projector replica keeps a shard after its last pull; a standby takes over
// after about that long.
const PinnedTTL = pinpull.PinnedTTL

// ackMargin keeps AckWait above the read side's own timeout, so a slow call fails by its deadline
// before the server would redeliver.
const ackMargin = 5 * time.Second

// ConsumerConfig is the durable consumer of one read side's shard: every event of the shard from the
// first one, up to the read side's MaxInFlight unacknowledged at once (the projector keeps revision
// order per entity itself: see shardRunner), and one active projector replica at a time (pinned
// priority group).
func ConsumerConfig(lay layout.Layout, rs config.ReadSide, shard int) jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		Durable:        lay.ReadSideConsumer(rs.ID, shard),
		Description:    fmt.Sprintf("read side %s, shard %d", rs.ID, shard),
		FilterSubject:  lay.ShardEventSubjects(shard),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        rs.Timeout + ackMargin,
		MaxDeliver:     -1,
		MaxAckPending:  rs.MaxInFlight,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{layout.ProjectorGroup},
		PinnedTTL:      PinnedTTL,
	}
	if !rs.AutoStart {
		cfg.PauseUntil = &Forever
	}
	return cfg
}

// Ensure returns the consumer of (rs, shard), creating it when it does not exist yet. An existing
// consumer keeps its position and pause state; only its AckWait and MaxAckPending follow a changed
// timeout or MaxInFlight.
func Ensure(ctx context.Context, js jetstream.JetStream, lay layout.Layout, rs config.ReadSide, shard int) (jetstream.Consumer, error) {
	want := ConsumerConfig(lay, rs, shard)
	stream := lay.EventStream()
	c, err := js.Consumer(ctx, stream, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		c, err = js.CreateConsumer(ctx, stream, want)
		if errors.Is(err, jetstream.ErrConsumerExists) { // another replica won the race
			c, err = js.Consumer(ctx, stream, want.Durable)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", want.Durable, err)
	}
	have := c.CachedInfo().Config
	if have.FilterSubject != want.FilterSubject {
		return nil, fmt.Errorf("%w: consumer %s filters %q, expected %q: COS_NUM_SHARDS or the prefix changed; delete it to start over",
			layout.ErrMismatch, want.Durable, have.FilterSubject, want.FilterSubject)
	}
	if have.AckWait != want.AckWait || have.MaxAckPending != want.MaxAckPending {
		upd := have
		upd.AckWait, upd.MaxAckPending = want.AckWait, want.MaxAckPending
		if c, err = js.UpdateConsumer(ctx, stream, upd); err != nil {
			return nil, fmt.Errorf("update consumer %s: %w", want.Durable, err)
		}
	}
	return c, nil
}
