// Package eventlog is the event log on JetStream: one stream, one subject per entity, appends guarded by
// Nats-Expected-Last-Subject-Sequence (JetStream itself enforces one writer per entity), multi-event
// appends as atomic batches, and reads of an entity's head from the stream leader.
package eventlog

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/telemetry"
)

// Message headers written with every event. Application headers never use the Nats- prefix.
const (
	HeaderCommandID = "Cos-Command-Id"
	HeaderRecent    = "Cos-Recent-Commands"
)

// MaxBatch is the most events one command may produce: JetStream's limit of messages per atomic batch
// (nats-server's default).
const MaxBatch = 1000

// ErrConflict means the entity changed since the expected sequence: reload and retry.
var ErrConflict = errors.New("entity changed concurrently")

// ErrBusy means the stream refused an atomic batch because too many are in flight (at most 50 per
// stream): nothing was stored, and the append may be retried shortly.
var ErrBusy = errors.New("too many atomic batches in flight")

// DuplicateError means the event store already holds this command: its id is in the stream's
// deduplication window (the last DedupWindow), though no longer among the entity's recent commands.
// Nothing was stored now. Seq is the stream sequence of the command's last event when the store says
// (a single event), 0 when it does not (a batch).
type DuplicateError struct{ Seq uint64 }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("the command is already stored (sequence %d, 0 = not told)", e.Seq)
}

// DedupWindow is how long the event stream remembers the id of every command it stored (JetStream's
// duplicate window): a retry within it is recognised even after many other commands of the entity.
const DedupWindow = 2 * time.Minute

// DedupID is the Nats-Msg-Id of a command's last event: the entity and the command id, hashed to a
// short, fixed length (the server keeps every id of the window in memory).
func DedupID(k entity.Key, commandID string) string {
	sum := sha256.Sum256([]byte(k.Token + "\x00" + commandID))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// ErrCorrupt means a stored message could not be decoded.
var ErrCorrupt = errors.New("corrupt event message")

// errNotSent marks an append that certainly did not reach the stream: the connection refused the
// publish, or a batch failed before its commit was sent (the server drops an uncommitted batch).
var errNotSent = errors.New("not sent")

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
	Layout    layout.Layout
	Replicas  int
	NumShards int // recorded in the stream's metadata: every process must agree on it
}

// Log appends and reads events.
type Log struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	layout   layout.Layout
	replicas int
	barriers barriers
	replies  replies // of the direct gets that verify a barrier
}

// Open binds the event stream, creating it when it does not exist, and refuses one whose settings
// disagree with cfg (an error wrapping layout.ErrMismatch). Any number of processes may call it at
// once.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Log, error) {
	if cfg.NumShards < 1 || cfg.Replicas < 1 {
		return nil, fmt.Errorf("eventlog: NumShards and Replicas must be >= 1")
	}
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
	info := s.CachedInfo()
	if err := compatible(info.Config, want); err != nil {
		return nil, err
	}
	l := &Log{js: js, stream: s, layout: cfg.Layout, replicas: cfg.Replicas}
	l.barriers.publish = l.publishBarrier
	if err := l.upgrade(ctx, info, cfg.NumShards); err != nil {
		return nil, err
	}
	return l, nil
}

// upgrade brings a stream made by an earlier version up to date: it records the shard count in the
// metadata (after checking that its first event sits on the shard this count gives it), and allows
// direct gets and per-message TTLs, which read barriers need. Events never carry a TTL.
func (l *Log) upgrade(ctx context.Context, info *jetstream.StreamInfo, numShards int) error {
	name, cfg := info.Config.Name, info.Config
	record := cfg.Metadata[MetaNumShards] == ""
	if !record && cfg.AllowDirect && cfg.AllowMsgTTL {
		return nil
	}
	if record && info.State.Msgs > 0 {
		m, err := l.get(ctx, GetRequest{Seq: info.State.FirstSeq, NextFor: l.layout.AllEventSubjects()})
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound): // only read barriers: no event to check
		case err != nil:
			return fmt.Errorf("read the first event of %s: %w", name, err)
		default:
			if err := checkShard(l.layout, name, m.Subject, numShards); err != nil {
				return err
			}
		}
	}
	meta := make(map[string]string, len(cfg.Metadata)+2)
	for k, v := range cfg.Metadata {
		meta[k] = v
	}
	if record {
		meta[MetaNumShards], meta[MetaLayout] = strconv.Itoa(numShards), LayoutVersion
	}
	cfg.Metadata, cfg.AllowDirect, cfg.AllowMsgTTL = meta, true, true
	s, err := l.js.UpdateStream(ctx, cfg)
	if err != nil {
		return fmt.Errorf("update stream %s (record COS_NUM_SHARDS, allow direct gets and message TTLs): %w", name, err)
	}
	l.stream = s
	return nil
}

// checkShard checks that the event on subject belongs to the shard numShards gives its entity.
func checkShard(lay layout.Layout, stream, subject string, numShards int) error {
	shard, token, ok := lay.ParseEventSubject(subject)
	id, perr := entity.ParseToken(token)
	if !ok || perr != nil {
		return fmt.Errorf("%w: stream %s holds a message on %s, not an event subject", layout.ErrMismatch, stream, subject)
	}
	if k, err := entity.NewKey(id, numShards); err != nil || k.Shard != shard {
		return fmt.Errorf("%w: stream %s was written with another COS_NUM_SHARDS than %d (its first event, of entity %q, is on shard %d); set COS_NUM_SHARDS to the value it was created with",
			layout.ErrMismatch, stream, numShards, id, shard)
	}
	return nil
}

// get reads from the stream leader. On a single replica that is a direct get (cheaper: no JSON), which
// nats.go chooses because such streams allow them.
func (l *Log) get(ctx context.Context, req GetRequest) (*jetstream.RawStreamMsg, error) {
	if l.replicas <= 1 {
		if req.LastFor != "" {
			return l.stream.GetLastMsgForSubject(ctx, req.LastFor)
		}
		var opts []jetstream.GetMsgOpt
		if req.NextFor != "" {
			opts = append(opts, jetstream.WithGetMsgSubject(req.NextFor))
		}
		return l.stream.GetMsg(ctx, req.Seq, opts...)
	}
	return LeaderGet(ctx, l.js.Conn(), l.layout.EventStream(), req)
}

// Last reads an entity's head from whoever leads the stream. A missing entity is Head{Seq: 0}. A
// leader that lost its quorum without noticing yet may answer an older head: fine for a command (its
// append's expected-sequence check fails and it reloads), not for a reader who was promised every
// acknowledged command (Current).
func (l *Log) Last(ctx context.Context, k entity.Key) (Head, error) {
	m, err := l.get(ctx, GetRequest{LastFor: l.layout.EventSubject(k)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("read last event of %q: %w", k.ID, err)
	}
	return decodeHead(m)
}

// LastAny reads an entity's head from any replica (a direct get): cheaper than Last on a replicated
// stream (no JSON, no trip to the leader), but a replica a little behind may answer an older head. Only
// for a reader whose next step checks the head, like a command, whose append's expected-sequence check
// refuses a stale head (ErrConflict); it must then read with Last.
func (l *Log) LastAny(ctx context.Context, k entity.Key) (Head, error) {
	if l.replicas <= 1 {
		return l.Last(ctx, k)
	}
	m, err := l.stream.GetLastMsgForSubject(ctx, l.layout.EventSubject(k))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("read last event of %q from any replica: %w", k.ID, err)
	}
	return decodeHead(m)
}

// At reads the event stored at stream sequence seq, which must belong to entity k.
func (l *Log) At(ctx context.Context, k entity.Key, seq uint64) (Head, error) {
	m, err := l.get(ctx, GetRequest{Seq: seq})
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

// HeaderBytes is an upper bound of the header bytes each message of a carries, so callers can check
// that an event fits in one NATS message before sending anything.
func HeaderBytes(commandID string, recent Recent) int {
	// NATS/1.0 line, the batch headers (id ≤ 22 characters, sequence ≤ 4 digits, commit) and the
	// expected sequence (≤ 20 digits), each with its name and separators, with room to spare; and the
	// trace context.
	const fixed = 320 // with Nats-Msg-Id
	n := fixed + telemetry.TraceHeaderBytes + len(HeaderCommandID) + 4 + len(commandID)
	if len(recent) > 0 {
		n += len(HeaderRecent) + 4 + len(recent.String())
	}
	return n
}

// Append stores the events: one plain publish for one event, one atomic batch for several. It returns
// the stream sequence of the last event. A stale ExpectedSeq yields ErrConflict and stores nothing.
// Whatever ctx allows bounds the whole append, batches included. See IsDefinite for what a failure
// means.
func (l *Log) Append(ctx context.Context, a Append) (uint64, error) {
	if len(a.Events) == 0 {
		return 0, errors.New("append: no events")
	}
	if len(a.Events) > MaxBatch {
		return 0, fmt.Errorf("%w: append: %d events, at most %d per command", errNotSent, len(a.Events), MaxBatch)
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
		// The command's trace context stays with its events: a read side's handling of them joins the
		// command's trace.
		telemetry.Inject(ctx, m.Header)
		msgs[i] = m
	}
	// The expected sequence goes on the first message only; on a later message of the same subject the
	// server would reject the batch.
	msgs[0].Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(a.ExpectedSeq, 10))
	if a.CommandID != "" {
		msgs[len(msgs)-1].Header.Set(jetstream.MsgIDHeader, DedupID(a.Key, a.CommandID))
	}
	if len(msgs) == 1 {
		ack, err := l.js.PublishMsg(ctx, msgs[0], jetstream.WithRetryAttempts(0))
		if err != nil {
			return 0, classify(err)
		}
		if ack.Duplicate {
			return 0, &DuplicateError{Seq: ack.Sequence}
		}
		return ack.Sequence, nil
	}
	seq, err := publishBatch(ctx, l.js.Conn(), msgs)
	if err != nil {
		return 0, classify(err)
	}
	return seq, nil
}

// Error codes of the JetStream API this package tells apart.
const (
	codeAtomicTooManyInflight = 10210
	codeBatchTooManyInflight  = 10211
	codeBatchDuplicateMsgID   = 10201 // a batch carries a message id the stream already stored
	codeDuplicateInProcess    = 10158 // a message with the same id is being stored right now
)

// classify turns the two OCC failures (10071 on any stream, 10164 on replicated ones while another
// write to the subject is in flight) into ErrConflict, and a full batch queue into ErrBusy.
func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant, codeDuplicateInProcess:
			return fmt.Errorf("%w: %w", ErrConflict, err)
		case codeBatchDuplicateMsgID:
			return &DuplicateError{}
		case codeAtomicTooManyInflight, codeBatchTooManyInflight:
			return fmt.Errorf("%w: %w", ErrBusy, err)
		}
	}
	return fmt.Errorf("append: %w", err)
}

// IsDefinite reports whether a failed append certainly stored nothing: the server answered with an
// error, or the message never left this process (refused by the connection while it reconnects —
// nothing is buffered for later —, too large, no stream listening, a batch that failed before its
// commit). Otherwise, e.g. after a timeout, the append may still land.
func IsDefinite(err error) bool {
	var apiErr *jetstream.APIError
	var dup *DuplicateError
	return errors.Is(err, ErrConflict) || errors.Is(err, ErrBusy) || errors.Is(err, errNotSent) || errors.As(err, &dup) ||
		errors.As(err, &apiErr) ||
		errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrReconnectBufExceeded) ||
		errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrConnectionDraining)
}

// MaxPayload is the largest message the connection may publish.
func (l *Log) MaxPayload() int64 { return l.js.Conn().MaxPayload() }
