package intake

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/pinpull"
)

// AsyncConfig are the asynchronous intake's settings.
type AsyncConfig struct {
	Layout   layout.Layout
	Replicas int
	// Limits of the intake stream. A full intake refuses new publishes (the producer's publish fails
	// with "maximum messages exceeded" / "maximum bytes exceeded"). 0 = unlimited.
	MaxMessages int64
	MaxBytes    int64
	MaxAge      time.Duration // a command waiting longer is dropped without an outcome; 0 = forever
	// Duplicates is the intake's deduplication window on Nats-Msg-Id; 0 = 2 minutes.
	Duplicates time.Duration
	// OutcomeMaxAge is how long outcomes (and rejected commands) are kept; 0 = 7 days.
	OutcomeMaxAge time.Duration
	// MaxInFlight bounds the commands taken and not decided (the consumer's max_ack_pending); 0 = 1000.
	MaxInFlight int
	// MaxMsgSize is the largest intake message (payload and headers); 0 = 1 MiB.
	MaxMsgSize int32
}

func (c *AsyncConfig) defaults() {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Duplicates <= 0 {
		c.Duplicates = 2 * time.Minute
	}
	if c.OutcomeMaxAge <= 0 {
		c.OutcomeMaxAge = 7 * 24 * time.Hour
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 1000
	}
	if c.MaxMsgSize <= 0 {
		c.MaxMsgSize = 1 << 20
	}
}

// ackWait is how long the server waits for a decision before delivering a command again; the session
// marks running commands in progress well before (a redelivery ends the session).
const ackWait = 30 * time.Second

func intakeStream(c AsyncConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Layout.IntakeStream(),
		Description: "chief-of-state asynchronous command intake",
		Subjects:    []string{c.Layout.IntakeSubject()},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     orUnlimited(c.MaxMessages),
		MaxBytes:    orUnlimited(c.MaxBytes),
		MaxAge:      c.MaxAge,
		MaxMsgSize:  c.MaxMsgSize,
		Duplicates:  c.Duplicates,
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
	}
}

func outcomeStream(c AsyncConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Layout.OutcomeStream(),
		Description: "chief-of-state outcomes of the asynchronous intake's commands",
		Subjects:    []string{c.Layout.OutcomeLogSubjects()},
		// Producers listen on the republished subjects: only what the stream stores reaches them, so
		// an outcome published twice (a retried publish, a successor deciding the command again) and
		// deduplicated on its Nats-Msg-Id is heard once.
		RePublish:   &jetstream.RePublish{Source: c.Layout.OutcomeLogSubjects(), Destination: c.Layout.OutcomeRepublish()},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1, // as the server reports "unlimited", so an unchanged stream is never updated
		MaxBytes:    -1,
		MaxMsgSize:  -1,
		MaxAge:      c.OutcomeMaxAge,
		Duplicates:  min(c.Duplicates, c.OutcomeMaxAge),
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		AllowDirect: true,
	}
}

func intakeConsumer(c AsyncConfig) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        c.Layout.IntakeConsumer(),
		Description:    "chief-of-state gateways taking intake commands (one pinned at a time)",
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		MaxDeliver:     -1,
		MaxAckPending:  c.MaxInFlight,
		FilterSubject:  c.Layout.IntakeSubject(),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{layout.IntakeGroup},
		PinnedTTL:      pinpull.PinnedTTL,
		Replicas:       c.Replicas,
	}
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Ensure creates the intake stream, the outcome stream and the intake consumer, or brings their limits
// in line with cfg. A stream that cannot be used as such (another retention, other subjects, another
// replica count) is layout.ErrMismatch.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg AsyncConfig) error {
	cfg.defaults()
	for _, want := range []jetstream.StreamConfig{intakeStream(cfg), outcomeStream(cfg)} {
		if err := ensureStream(ctx, js, want); err != nil {
			return err
		}
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, cfg.Layout.IntakeStream(), intakeConsumer(cfg)); err != nil {
		return fmt.Errorf("intake consumer: %w", err)
	}
	return nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err = js.CreateStream(ctx, want); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", want.Name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", want.Name, err)
	}
	have := s.CachedInfo().Config
	switch {
	case have.Retention != want.Retention:
		return fmt.Errorf("%w: stream %s has retention %s, this version needs %s", layout.ErrMismatch, want.Name, have.Retention, want.Retention)
	case len(have.Subjects) != 1 || have.Subjects[0] != want.Subjects[0]:
		return fmt.Errorf("%w: stream %s has subjects %v, this version needs %v", layout.ErrMismatch, want.Name, have.Subjects, want.Subjects)
	case have.Replicas != want.Replicas:
		return fmt.Errorf("%w: stream %s has %d replicas, COS_NATS_REPLICAS is %d", layout.ErrMismatch, want.Name, have.Replicas, want.Replicas)
	}
	if have.MaxMsgs == want.MaxMsgs && have.MaxBytes == want.MaxBytes && have.MaxAge == want.MaxAge &&
		have.MaxMsgSize == want.MaxMsgSize && have.Duplicates == want.Duplicates && have.Discard == want.Discard &&
		have.AllowDirect == want.AllowDirect && reflect.DeepEqual(have.RePublish, want.RePublish) {
		return nil
	}
	upd := have
	upd.MaxMsgs, upd.MaxBytes, upd.MaxAge, upd.MaxMsgSize = want.MaxMsgs, want.MaxBytes, want.MaxAge, want.MaxMsgSize
	upd.Duplicates, upd.Discard, upd.AllowDirect, upd.RePublish = want.Duplicates, want.Discard, want.AllowDirect, want.RePublish
	if _, err := js.UpdateStream(ctx, upd); err != nil {
		return fmt.Errorf("update the limits of stream %s: %w", want.Name, err)
	}
	return nil
}
