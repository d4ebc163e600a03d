package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	natspb "github.com/cosnats/cosnats/gen/cosnats/v1"
	"github.com/cosnats/cosnats/pkg/command"
	"github.com/cosnats/cosnats/pkg/eventlog"
	"github.com/cosnats/cosnats/pkg/gateway"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/pinpull"
	"github.com/cosnats/cosnats/pkg/schema"
	"github.com/cosnats/cosnats/pkg/telemetry"
)

// Async takes commands from the intake stream and runs them. Every gateway runs one; the server pins
// the intake consumer to one of them at a time, and the others stand by.
//
// Order and exactly-once rest on three things. Commands of one entity run one at a time, in stream
// order, each only after the one before it has its outcome (a "lane" per entity id). Each session
// starts with a reset of the consumer to its ack floor and ends at the first delivery it did not
// observe in order (pinpull), so no command is started while an earlier one of its entity is
// undecided. And a command runs with its command id (Cos-Command-Id, else Nats-Msg-Id, else
// "intake-<sequence>"), so running it again after a crash is answered from the log (idempotency);
// its outcome is published with that id as Nats-Msg-Id, and a command delivered before the session
// began is first looked up among the outcomes, so it gets one outcome.
type Async struct {
	cfg     AsyncConfig
	nc      *nats.Conn
	js      jetstream.JetStream
	run     Runner
	types   *schema.Resolver
	log     *slog.Logger
	metrics *telemetry.Metrics
	drain   time.Duration

	pin   string
	lease time.Time
}

// AsyncDeps are what Async works with.
type AsyncDeps struct {
	Conn    *nats.Conn
	JS      jetstream.JetStream
	Run     Runner
	Types   *schema.Resolver // nil: protobuf commands only
	Logger  *slog.Logger
	Metrics *telemetry.Metrics
	// DrainTimeout bounds how long commands running at shutdown may take; 0 = 10 s.
	DrainTimeout time.Duration
}

// NewAsync builds the asynchronous intake; Ensure must have created its streams.
func NewAsync(cfg AsyncConfig, d AsyncDeps) *Async {
	cfg.defaults()
	if d.DrainTimeout <= 0 {
		d.DrainTimeout = 10 * time.Second
	}
	return &Async{cfg: cfg, nc: d.Conn, js: d.JS, run: d.Run, types: d.Types, log: d.Logger, metrics: d.Metrics,
		drain: d.DrainTimeout}
}

// Run takes intake commands until ctx ends.
func (a *Async) Run(ctx context.Context) error {
	errs := 0
	retry := func(what string, err error) {
		errs++
		d := backoff(errs)
		a.log.Warn(what+"; retrying", "err", err, "retry_in", d)
		sleep(ctx, d)
	}
	for ctx.Err() == nil {
		if a.pin == "" {
			a.metrics.IntakePending(0)
			if err := a.standby(ctx); err != nil {
				if _, ierr := a.js.Consumer(ctx, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer()); errors.Is(ierr, jetstream.ErrConsumerNotFound) {
					if eerr := Ensure(ctx, a.js, a.cfg); eerr != nil {
						err = errors.Join(err, eerr)
					}
				}
				retry("wait for the intake", err)
			}
			continue
		}
		delivered, err := a.prepare(ctx)
		if err != nil {
			if errors.Is(err, errNotOwner) || !time.Now().Before(a.lease) {
				a.log.Info("the intake is held by another gateway", "reason", err)
				a.pin = ""
				continue
			}
			retry("prepare the intake", err)
			continue
		}
		errs = 0
		why, lostPin := a.session(ctx, delivered)
		switch {
		case lostPin:
			a.log.Warn("lost the intake", "reason", why)
			a.pin = ""
		case why != "":
			a.log.Warn("intake session ended; restarting at the ack floor", "reason", why)
		}
	}
	return nil
}

var errNotOwner = errors.New("the intake is not pinned to this gateway")

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 5*time.Second; i++ {
		d *= 2
	}
	d = min(d, 5*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// standby waits until the server pins the intake to this gateway.
func (a *Async) standby(ctx context.Context) error {
	pin, lease, err := pinpull.Standby(ctx, a.nc, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer(), layout.IntakeGroup,
		2*time.Second, a.unstick, nil)
	if err != nil || pin == "" {
		return err
	}
	a.pin, a.lease = pin, lease
	a.log.Info("this gateway holds the intake")
	return nil
}

// unstick resets the intake to its ack floor when nobody holds the pin and commands are outstanding: a
// gateway that went away may have left them at max_ack_pending, and then nobody would be pinned until
// they time out.
func (a *Async) unstick(ctx context.Context) {
	c, err := a.js.Consumer(ctx, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer())
	if err != nil {
		return
	}
	info := c.CachedInfo()
	if pinned(info) != "" || info.NumAckPending == 0 {
		return
	}
	if _, err := a.js.ResetConsumer(ctx, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer()); err == nil {
		a.log.Info("reset the intake to its ack floor: the gateway that held it left commands outstanding", "outstanding", info.NumAckPending)
	}
}

func pinned(info *jetstream.ConsumerInfo) string {
	for _, g := range info.PriorityGroups {
		if g.Group == layout.IntakeGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

// prepare checks the pin is still this gateway's and resets the consumer to its ack floor. It returns
// the last stream sequence delivered before: commands up to it may have been decided already.
func (a *Async) prepare(ctx context.Context) (uint64, error) {
	if !time.Now().Before(a.lease) {
		return 0, fmt.Errorf("%w: its lease ran out", errNotOwner)
	}
	c, err := a.js.Consumer(ctx, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer())
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, fmt.Errorf("%w: the intake consumer was deleted", errNotOwner)
	}
	if err != nil {
		return 0, fmt.Errorf("intake consumer: %w", err)
	}
	info := c.CachedInfo()
	if p := pinned(info); p != a.pin {
		return 0, fmt.Errorf("%w: pinned to %q", errNotOwner, p)
	}
	if _, err := a.js.ResetConsumer(ctx, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer()); err != nil {
		return 0, fmt.Errorf("reset the intake consumer to its ack floor: %w", err)
	}
	a.metrics.IntakePending(info.NumPending + uint64(info.NumAckPending))
	return info.Delivered.Stream, nil
}

// delivery is one intake command in a session.
type delivery struct {
	msg      *nats.Msg
	seq      uint64
	stored   time.Time
	lane     string
	started  time.Time // last InProgress (or the start)
	doubtful bool      // delivered before this session: its outcome may exist

	// Set by decide.
	outcomeID string // the command id, or "intake-<seq>" when it has none valid
	accept    string
	replyTo   string
}

// session runs commands from the ack floor until something ends it, and returns once none it started
// is running. It reports why it ended ("" for shutdown) and whether the pin may be lost.
func (a *Async) session(ctx context.Context, delivered uint64) (string, bool) {
	pl, err := pinpull.New(a.nc, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer(), layout.IntakeGroup, a.pin, a.cfg.MaxInFlight)
	if err != nil {
		return err.Error(), false
	}
	defer pl.Close()
	pl.Lease = a.lease
	defer func() { a.lease = pl.Lease }()
	calls, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	reconnects := a.nc.Stats().Reconnects
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	status := time.NewTicker(5 * time.Second)
	defer status.Stop()
	results := make(chan *delivery)

	var (
		lanes    = map[string][]*delivery{} // lane → commands waiting behind the running one
		running  = map[uint64]*delivery{}
		why      *string
		lostPin  bool
		drain    <-chan time.Time
		drainTmr *time.Timer
	)
	defer func() {
		if drainTmr != nil {
			drainTmr.Stop()
		}
	}()
	stop := func(reason string, lost, cancel bool) {
		if why == nil {
			why, lostPin = &reason, lost
		}
		if cancel {
			cancelCalls()
		}
	}
	start := func(d *delivery) {
		d.started = time.Now()
		running[d.seq] = d
		go func() { a.process(calls, d); results <- d }()
	}
	if err := pl.Maintain(time.Now()); err != nil {
		return err.Error(), false
	}
	for {
		if why != nil && len(running) == 0 {
			return *why, lostPin
		}
		select {
		case <-ctx.Done():
			if drain == nil {
				stop("", false, false)
				drainTmr = time.NewTimer(a.drain)
				drain = drainTmr.C
			}
			ctx = context.Background()
		case <-drain:
			stop("", false, true)
		case m := <-pl.Msgs:
			if why != nil {
				continue
			}
			ev, reason := pl.Receive(m, time.Now())
			// Pull again as soon as the outstanding pulls run low, not at the next tick (which would
			// cap the intake at one batch per 100 ms).
			if ev == pinpull.Delivery {
				if err := pl.Maintain(time.Now()); err != nil {
					stop(err.Error(), false, true)
					continue
				}
			}
			switch ev {
			case pinpull.LostPin:
				stop("another gateway holds the intake", true, true)
			case pinpull.Broken:
				stop(reason, false, true)
			case pinpull.Delivery:
				meta, err := m.Metadata()
				if err != nil {
					stop("delivery without metadata", false, true)
					continue
				}
				d := &delivery{msg: m, seq: meta.Sequence.Stream, stored: meta.Timestamp, doubtful: meta.Sequence.Stream <= delivered}
				d.lane = header(m.Header, HeaderEntityID)
				if d.lane == "" {
					d.lane = "#" + strconv.FormatUint(d.seq, 10) // undecodable: rejected on its own
				}
				if q, busy := lanes[d.lane]; busy {
					lanes[d.lane] = append(q, d)
					continue
				}
				if !time.Now().Before(pl.Lease) {
					stop("the pin's lease ran out", true, true)
					continue
				}
				lanes[d.lane] = nil
				start(d)
			}
		case d := <-results:
			delete(running, d.seq)
			if why != nil || calls.Err() != nil {
				continue
			}
			q := lanes[d.lane]
			if len(q) == 0 {
				delete(lanes, d.lane)
				continue
			}
			if !time.Now().Before(pl.Lease) {
				stop("the pin's lease ran out", true, true)
				continue
			}
			lanes[d.lane] = q[1:]
			start(q[0])
		case now := <-tick.C:
			if why != nil {
				continue
			}
			switch {
			case !now.Before(pl.Lease):
				stop("the pin's lease ran out", true, true)
			case pl.Quiet(now):
				stop("no heartbeat from the server", false, true)
			case a.nc.Stats().Reconnects != reconnects:
				stop("reconnected to NATS", false, true)
			default:
				if err := pl.Maintain(now); err != nil {
					stop(err.Error(), false, true)
				}
				for _, d := range running {
					if now.Sub(d.started) > ackWait/3 {
						d.started = now
						// Straight to the ack subject: the Msg itself is its goroutine's to ack.
						_ = a.nc.Publish(d.msg.Reply, []byte("+WPI"))
					}
				}
			}
		case <-status.C:
			a.reportPending(ctx)
		}
	}
}

func (a *Async) reportPending(ctx context.Context) {
	c, err := a.js.Consumer(ctx, a.cfg.Layout.IntakeStream(), a.cfg.Layout.IntakeConsumer())
	if err == nil {
		info := c.CachedInfo()
		a.metrics.IntakePending(info.NumPending + uint64(info.NumAckPending))
	}
}

// process decides one command and acknowledges it; when ctx ends first it leaves it to the next
// session (no outcome, no ack).
func (a *Async) process(ctx context.Context, d *delivery) {
	o, ok := a.decide(ctx, d)
	if !ok {
		return
	}
	if o != nil {
		if !a.publish(ctx, d, o) {
			return
		}
	}
	if err := d.msg.Ack(); err != nil {
		a.log.Debug("ack an intake command", "sequence", d.seq, "err", err) // decided again next session: same outcome
	}
}

// maxHandlerRetries bounds how often a command the write handler fails with a transient code is tried.
const maxHandlerRetries = 5

// decide runs the command until its outcome is definite. It returns nil (and true) when the command's
// outcome was published already.
func (a *Async) decide(ctx context.Context, d *delivery) (*natspb.CommandOutcome, bool) {
	c, derr := Decode(ctx, d.msg.Header, d.msg.Data, a.decodeTypes())
	d.accept = ContentProtobuf
	if c.Accept != "" {
		d.accept = c.Accept
	}
	d.replyTo = header(d.msg.Header, HeaderReplyTo)
	var commandID string
	if ids := c.MD.Get(gateway.CommandIDKey); derr == nil && len(ids) > 0 {
		commandID = ids[0]
	} else if commandID = header(d.msg.Header, HeaderCommandID); commandID == "" {
		commandID = header(d.msg.Header, headerMsgID)
	}
	if commandID == "" {
		commandID = "intake-" + strconv.FormatUint(d.seq, 10)
		if derr == nil {
			c.MD.Set(gateway.CommandIDKey, commandID)
		}
	}
	d.outcomeID = commandID
	if command.ValidateCommandID(commandID) != nil {
		d.outcomeID = "intake-" + strconv.FormatUint(d.seq, 10) // refused below; its outcome still needs a subject
	}
	if d.doubtful {
		done, err := a.decided(ctx, d)
		for err != nil {
			if !sleep(ctx, time.Second) {
				return nil, false
			}
			done, err = a.decided(ctx, d)
		}
		if done {
			return nil, true
		}
	}
	var res gateway.Result
	entityID := header(d.msg.Header, HeaderEntityID)
	if derr != nil {
		res = gateway.Result{Err: derr, CommandID: commandID}
	} else {
		for attempt := 1; ; attempt++ {
			res = a.run.Run(ctx, c.Request, c.MD)
			if ctx.Err() != nil {
				return nil, false
			}
			if definite(res, attempt) {
				break
			}
			a.log.Debug("intake command not decided; retrying", "command_id", commandID, "attempt", attempt, "err", res.Err)
			if !sleep(ctx, backoff(attempt)) {
				return nil, false
			}
		}
	}
	o := Outcome(entityID, res)
	if o.CommandId == "" {
		o.CommandId = commandID
	}
	o.IntakeSequence = d.seq
	o.AcceptedAt = timestamppb.New(d.stored)
	o.DecidedAt = timestamppb.Now()
	if res.Err != nil {
		// Kept for inspection: the command as read, or its raw bytes.
		if derr == nil {
			o.Command = c.Request.GetCommand()
		} else {
			o.RawPayload = d.msg.Data
			if t := header(d.msg.Header, HeaderCommandType); t != "" && d.accept == ContentProtobuf {
				o.Command = &anypb.Any{TypeUrl: t, Value: d.msg.Data}
			}
		}
	}
	return o, true
}

// decided reports whether the outcome of d (this very intake message) was published already.
func (a *Async) decided(ctx context.Context, d *delivery) (bool, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := eventlog.LeaderGet(gctx, a.nc, a.cfg.Layout.OutcomeStream(), eventlog.GetRequest{LastFor: a.cfg.Layout.OutcomeLogSubject(d.outcomeID)})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up the outcome of intake command %d: %w", d.seq, err)
	}
	return m.Header.Get(HeaderIntakeSeq) == strconv.FormatUint(d.seq, 10), nil
}

// definite reports whether a result is the command's outcome, rather than a failure to learn it
// (no worker, NATS or the event store unavailable, conflicts exhausted, outcome unknown): those are
// run again with the same command id. A write handler's own transient errors are tried a few times.
func definite(res gateway.Result, attempt int) bool {
	if res.Err == nil {
		return true
	}
	switch status.Code(res.Err) {
	case codes.Unavailable, codes.Unknown, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted, codes.Canceled, codes.Internal:
		return res.HandlerError && attempt >= maxHandlerRetries
	}
	return true
}

// publish stores the outcome (deduplicated on its command id and intake sequence; the stream
// republishes it to producers), then sends it to the producer's reply subject unless it was stored
// before. It reports false when ctx ended before the outcome was stored.
func (a *Async) publish(ctx context.Context, d *delivery, o *natspb.CommandOutcome) bool {
	enc, err := Encode(o, d.accept, a.jsonTypes())
	if err != nil {
		a.log.Error("encode an intake outcome", "sequence", d.seq, "err", err)
		return false
	}
	msg := nats.NewMsg(a.cfg.Layout.OutcomeLogSubject(d.outcomeID))
	msg.Header, msg.Data = enc.Header, enc.Data
	msg.Header.Set(headerMsgID, d.outcomeID+"@"+strconv.FormatUint(d.seq, 10))
	var ack *jetstream.PubAck
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err = a.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		a.log.Warn("store an intake outcome; retrying", "sequence", d.seq, "err", err)
		if !sleep(ctx, backoff(attempt)) {
			return false
		}
	}
	if ack.Duplicate {
		return true // stored (and sent) before
	}
	switch {
	case o.GetError() != nil:
		a.metrics.IntakeCommand(telemetry.IntakeRejected)
	case o.GetReplayed():
		a.metrics.IntakeCommand(telemetry.IntakeReplayed)
	default:
		a.metrics.IntakeCommand(telemetry.IntakeOK)
	}
	if d.replyTo != "" {
		r := nats.NewMsg(d.replyTo)
		r.Header, r.Data = enc.Header, enc.Data
		r.Header.Del(headerMsgID)
		if err := a.nc.PublishMsg(r); err != nil {
			a.log.Warn("send an intake outcome to the reply subject", "subject", d.replyTo, "err", err)
		}
	}
	return true
}

func (a *Async) decodeTypes() Types {
	if a.types == nil {
		return nil
	}
	return a.types
}

func (a *Async) jsonTypes() JSONTypes {
	if a.types == nil {
		return nil
	}
	return a.types
}
