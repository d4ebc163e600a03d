// Package eventlog is the event log on JetStream: one stream, one subject per entity, appends guarded by
// Nats-Expected-Last-Subject-Sequence (JetStream itself enforces one writer per entity), multi-event
// appends as atomic batches, and reads of an entity's head from the stream leader.
package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
)

// Message headers written with every event. Application headers never use the Nats- prefix.
const (
	HeaderCommandID = "Cos-Command-Id"
	HeaderRecent    = "Cos-Recent-Commands"
)

// ErrConflict means the entity changed since the expected sequence: reload and retry.
var ErrConflict = errors.New("entity changed concurrently")

// ErrBusy means the stream refused an atomic batch because too many are in flight (at most 50 per
// stream): nothing was stored, and the append may be retried shortly.
var ErrBusy = errors.New("too many atomic batches in flight")

// ErrCorrupt means a stored message could not be decoded.
var ErrCorrupt = errors.New("corrupt event message")

// Head is an entity's latest persisted state: what a command needs to run and what GetState returns.
// Seq 0 means the entity has no events (revision 0).
type Head struct {
	Seq       uint64
	State     *anypb.Any
	Meta      *cospb.MetaData
	CommandID string
	Recent    Recent
}

// Revision is the entity's revision number.
func (h Head) Revision() uint32 { return h.Meta.GetRevisionNumber() }

// Applied returns the sequence of the last event of command id if the log remembers it.
func (h Head) Applied(id string) (uint64, bool) {
	if id == "" || h.Seq == 0 {
		return 0, false
	}
	if h.CommandID == id {
		return h.Seq, true
	}
	return h.Recent.Lookup(id)
}

// Config describes the stream to create or verify.
type Config struct {
	Layout   layout.Layout
	Replicas int
}

// Log appends and reads events.
type Log struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	layout layout.Layout
}

// StreamConfig is the event stream's configuration: no age or count limits (sequences must never be
// reused by an entity whose messages aged out), deletes and purges denied, atomic batches allowed.
// Direct gets (cheap: no JSON API round trip) only on a single replica, where they are read-your-writes;
// on replicated streams any replica may answer a direct get, so every read goes to the leader instead.
func StreamConfig(cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:               cfg.Layout.EventStream(),
		Description:        "chief-of-state events (EventWrapper per message, one subject per entity)",
		Subjects:           []string{cfg.Layout.EventSubjects()},
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		Replicas:           cfg.Replicas,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxAge:             0,
		MaxMsgsPerSubject:  -1,
		Discard:            jetstream.DiscardOld,
		DenyDelete:         true,
		DenyPurge:          true,
		AllowAtomicPublish: true,
		AllowDirect:        cfg.Replicas <= 1,
	}
}

// Open creates the event stream or verifies that an existing one is compatible, idempotently.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Log, error) {
	want := StreamConfig(cfg)
	s, err := js.Stream(ctx, want.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another process won the race
			s, err = js.Stream(ctx, want.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", want.Name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("look up stream %s: %w", want.Name, err)
	}
	if err := compatible(s.CachedInfo().Config, want); err != nil {
		return nil, err
	}
	return &Log{js: js, stream: s, layout: cfg.Layout}, nil
}

// compatible reports settings of an existing stream that would break our guarantees.
func compatible(got, want jetstream.StreamConfig) error {
	var errs []error
	bad := func(what string, have, need any) {
		errs = append(errs, fmt.Errorf("%s is %v, needs %v", what, have, need))
	}
	if len(got.Subjects) != 1 || got.Subjects[0] != want.Subjects[0] {
		bad("subjects", got.Subjects, want.Subjects)
	}
	if got.Retention != jetstream.LimitsPolicy {
		bad("retention", got.Retention, want.Retention)
	}
	if got.MaxAge != 0 {
		bad("max_age", got.MaxAge, "unlimited (0)")
	}
	if got.MaxMsgsPerSubject > 0 {
		bad("max_msgs_per_subject", got.MaxMsgsPerSubject, "unlimited (-1)")
	}
	if got.MaxMsgs > 0 || got.MaxBytes > 0 {
		bad("max_msgs/max_bytes", fmt.Sprint(got.MaxMsgs, "/", got.MaxBytes), "unlimited (-1)")
	}
	if !got.AllowAtomicPublish {
		bad("allow_atomic", false, true)
	}
	if got.AllowDirect && got.Replicas > 1 {
		bad("allow_direct", true, "false with replicas > 1 (direct gets are not read-your-writes on replicas)")
	}
	if len(errs) > 0 {
		return fmt.Errorf("stream %s exists with an incompatible configuration: %w", want.Name, errors.Join(errs...))
	}
	return nil
}

// Last reads an entity's head from the stream leader. A missing entity is Head{Seq: 0}.
func (l *Log) Last(ctx context.Context, k entity.Key) (Head, error) {
	m, err := l.stream.GetLastMsgForSubject(ctx, l.layout.EventSubject(k))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("read last event of %q: %w", k.ID, err)
	}
	return decodeHead(m)
}

// At reads the event stored at stream sequence seq, which must belong to entity k.
func (l *Log) At(ctx context.Context, k entity.Key, seq uint64) (Head, error) {
	m, err := l.stream.GetMsg(ctx, seq)
	if err != nil {
		return Head{}, fmt.Errorf("read event %d of %q: %w", seq, k.ID, err)
	}
	if m.Subject != l.layout.EventSubject(k) {
		return Head{}, fmt.Errorf("%w: sequence %d belongs to %s, not %q", ErrCorrupt, seq, m.Subject, k.ID)
	}
	return decodeHead(m)
}

func decodeHead(m *jetstream.RawStreamMsg) (Head, error) {
	var w cospb.EventWrapper
	if err := proto.Unmarshal(m.Data, &w); err != nil {
		return Head{}, fmt.Errorf("%w: sequence %d: %v", ErrCorrupt, m.Sequence, err)
	}
	recent, err := ParseRecent(m.Header.Get(HeaderRecent))
	if err != nil {
		return Head{}, fmt.Errorf("%w: sequence %d: %v", ErrCorrupt, m.Sequence, err)
	}
	return Head{
		Seq:       m.Sequence,
		State:     w.GetResultingState(),
		Meta:      w.GetMeta(),
		CommandID: m.Header.Get(HeaderCommandID),
		Recent:    recent,
	}, nil
}

// Append is one command's events for one entity, to be stored after the entity's event at ExpectedSeq.
type Append struct {
	Key         entity.Key
	ExpectedSeq uint64
	CommandID   string
	Recent      Recent   // the command ids remembered before this command
	Events      [][]byte // marshalled EventWrappers, in revision order
}

// Append stores the events: one plain publish for one event, one atomic batch for several. It returns
// the stream sequence of the last event. A stale ExpectedSeq yields ErrConflict and stores nothing.
func (l *Log) Append(ctx context.Context, a Append) (uint64, error) {
	if len(a.Events) == 0 {
		return 0, errors.New("append: no events")
	}
	subject := l.layout.EventSubject(a.Key)
	recent := a.Recent.String()
	msgs := make([]*nats.Msg, len(a.Events))
	for i, data := range a.Events {
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(HeaderCommandID, a.CommandID)
		if recent != "" {
			m.Header.Set(HeaderRecent, recent)
		}
		msgs[i] = m
	}
	// The expected sequence goes on the first message only; on a later message of the same subject the
	// server would reject the batch.
	msgs[0].Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(a.ExpectedSeq, 10))
	if len(msgs) == 1 {
		ack, err := l.js.PublishMsg(ctx, msgs[0], jetstream.WithRetryAttempts(0))
		if err != nil {
			return 0, classify(err)
		}
		return ack.Sequence, nil
	}
	ack, err := jetstreamext.PublishMsgBatch(ctx, l.js, msgs)
	if err != nil {
		return 0, classify(err)
	}
	return ack.Sequence, nil
}

// classify turns the two OCC failures (10071 on any stream, 10164 on replicated ones while another
// write to the subject is in flight) into ErrConflict.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return fmt.Errorf("%w: %v", ErrConflict, err)
		case jetstreamext.JSErrCodeAtomicPublishTooManyInflight, jetstreamext.JSErrCodeBatchPublishTooManyInflight:
			return fmt.Errorf("%w: %v", ErrBusy, err)
		}
	}
	return fmt.Errorf("append: %w", err)
}

// IsDefinite reports whether a failed append certainly stored nothing (the server answered with an
// error). Otherwise, e.g. after a timeout, the append may still land.
func IsDefinite(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, ErrConflict) || errors.As(err, &apiErr) || errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrNoResponders)
}

// MaxPayload is the largest message the connection may publish.
func (l *Log) MaxPayload() int64 { return l.js.Conn().MaxPayload() }
