package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/cosnats/cosnats/pkg/buildinfo"
)

// Command outcomes, the values of cos_commands_total's outcome label.
const (
	OutcomeOK           = "ok"            // applied, or a no-op answered with the current state
	OutcomeHandlerError = "handler_error" // the write handler answered with an error status
	OutcomeInvalid      = "invalid"       // refused by validation: nothing was tried
	OutcomeAborted      = "aborted"       // conflicts exhausted: nothing was persisted
	OutcomeUnavailable  = "unavailable"   // not processed: no worker, NATS down, over capacity, deadline
	OutcomeUnknown      = "unknown"       // the caller must retry with the same command id to learn it
	OutcomeReplayed     = "replayed"      // the command id was applied before: answered from the log
)

// Read-side event outcomes, the values of cos_readside_events_total's outcome label.
const (
	EventOK      = "ok"
	EventFailed  = "failed"  // one failed attempt (a retried event counts once per attempt)
	EventSkipped = "skipped" // given up by the failure policy (also counted as failed)
)

// Shard states, the values of cos_readside_shard_state's state label.
const (
	ShardRunning = "running"
	ShardPaused  = "paused"
	ShardStopped = "stopped"
	ShardFailing = "failing"
)

var (
	outcomes      = []string{OutcomeOK, OutcomeHandlerError, OutcomeInvalid, OutcomeAborted, OutcomeUnavailable, OutcomeUnknown, OutcomeReplayed}
	eventOutcomes = []string{EventOK, EventFailed, EventSkipped}
	shardStates   = []string{ShardRunning, ShardPaused, ShardStopped, ShardFailing}
	// HandlerMethods are the values of cos_handler_duration_seconds's method label.
	HandlerMethods = []string{"HandleCommand", "HandleEvent", "HandleReadSide"}
)

// Bucket bounds in seconds: calls and appends from sub-millisecond to the 10 s a command may take;
// read-side lag up to minutes (a read side catching up).
var (
	latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	lagBuckets     = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800}
)

// Metrics are the Prometheus metrics of one process. Every method is safe on a nil *Metrics (then it
// does nothing), so a component built without metrics needs no checks.
type Metrics struct {
	reg *prometheus.Registry

	commands        *prometheus.CounterVec
	commandDuration prometheus.Histogram
	handlerDuration *prometheus.HistogramVec
	appendDuration  prometheus.Histogram
	appendConflicts prometheus.Counter
	cacheRequests   *prometheus.CounterVec
	readSideEvents  *prometheus.CounterVec
	readSideLag     *prometheus.GaugeVec
	readSideLagSecs *prometheus.HistogramVec
	shardState      *prometheus.GaugeVec
	intakeCommands  *prometheus.CounterVec
	intakePending   prometheus.Gauge

	inflight  atomic.Pointer[func() int64]
	workers   atomic.Pointer[func() int]
	connMu    sync.Mutex
	connected []func() bool
}

// NewMetrics registers every metric, the Go runtime and process collectors and cos_build_info on a
// registry of its own (so several nodes in one test process do not collide).
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.commands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cos_commands_total",
		Help: "Commands answered by the gateway, by outcome.",
	}, []string{"outcome"})
	m.commandDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cos_command_duration_seconds",
		Help:    "Time from a ProcessCommand call reaching the gateway to its answer.",
		Buckets: latencyBuckets,
	})
	m.handlerDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cos_handler_duration_seconds",
		Help:    "Duration of calls to the application's handlers, by method.",
		Buckets: latencyBuckets,
	}, []string{"method"})
	m.appendDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "cos_append_duration_seconds",
		Help:    "Duration of event appends to JetStream (each attempt).",
		Buckets: latencyBuckets,
	})
	m.appendConflicts = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cos_append_conflicts_total",
		Help: "Appends refused by the expected-sequence check (another write to the entity came first).",
	})
	m.cacheRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cos_state_cache_requests_total",
		Help: "Entity state lookups in the worker's cache, by result.",
	}, []string{"result"})
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cos_worker_inflight_commands",
		Help: "Commands accepted by this worker and not yet answered (queued or running).",
	}, func() float64 {
		if f := m.inflight.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	workers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cos_gateway_workers",
		Help: "Workers this gateway hears heartbeats from: it sends each entity's commands to one of them (0: all go to the workers' queue group).",
	}, func() float64 {
		if f := m.workers.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	m.readSideEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cos_readside_events_total",
		Help: "Events handed to read sides by this projector, by outcome (failed counts attempts; skipped = given up by the failure policy).",
	}, []string{"read_side", "outcome"})
	m.readSideLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cos_readside_lag_events",
		Help: "Events of the shard not yet acknowledged by the read side (pending in its consumer); reported by the projector that holds the shard.",
	}, []string{"read_side", "shard"})
	m.readSideLagSecs = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "cos_readside_lag_seconds",
		Help:    "Time from an event being stored to the read side handling it.",
		Buckets: lagBuckets,
	}, []string{"read_side"})
	m.shardState = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "cos_readside_shard_state",
		Help: "1 for the state the shard is in (running, paused, stopped, failing); reported by the projector that holds the shard.",
	}, []string{"read_side", "shard", "state"})
	m.intakeCommands = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cos_intake_commands_total",
		Help: "Commands of the asynchronous intake whose outcome this gateway published, by outcome (ok, replayed, rejected).",
	}, []string{"outcome"})
	m.intakePending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cos_intake_pending_commands",
		Help: "Commands in the asynchronous intake without an outcome yet (waiting or running); reported by the gateway that holds the intake, 0 elsewhere.",
	})
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cos_nats_connected",
		Help: "1 when every NATS connection of this process is connected.",
	}, m.natsConnected)
	bi := buildinfo.Get()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "cos_build_info",
		Help:        "The running build: always 1.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "revision": bi.Revision},
	})
	build.Set(1)
	m.reg.MustRegister(m.commands, m.commandDuration, m.handlerDuration, m.appendDuration, m.appendConflicts,
		m.cacheRequests, inflight, workers, m.readSideEvents, m.readSideLag, m.readSideLagSecs, m.shardState, m.intakeCommands, m.intakePending, connected, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Series that exist from the start, so rates and alerts see zeros rather than nothing.
	for _, o := range outcomes {
		m.commands.WithLabelValues(o)
	}
	for _, meth := range HandlerMethods {
		m.handlerDuration.WithLabelValues(meth)
	}
	m.cacheRequests.WithLabelValues("hit")
	m.cacheRequests.WithLabelValues("miss")
	for _, o := range IntakeOutcomes {
		m.intakeCommands.WithLabelValues(o)
	}
	return m
}

// Intake outcomes, the values of cos_intake_commands_total's outcome label.
const (
	IntakeOK       = "ok"       // applied (or a no-op)
	IntakeReplayed = "replayed" // its command id had been applied before
	IntakeRejected = "rejected" // refused for good: invalid, or the write handler's error
)

// IntakeOutcomes lists the intake outcomes.
var IntakeOutcomes = []string{IntakeOK, IntakeReplayed, IntakeRejected}

// IntakeCommand records an intake command whose outcome was published.
func (m *Metrics) IntakeCommand(outcome string) {
	if m == nil {
		return
	}
	m.intakeCommands.WithLabelValues(outcome).Inc()
}

// IntakePending reports the commands of the intake without an outcome.
func (m *Metrics) IntakePending(n uint64) {
	if m == nil {
		return
	}
	m.intakePending.Set(float64(n))
}

// Registry is where the metrics are registered (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text format, or OpenMetrics (with exemplars) when the
// scraper asks for it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}

// Command records a ProcessCommand answered by the gateway.
func (m *Metrics) Command(ctx context.Context, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.commands.WithLabelValues(outcome).Inc()
	observe(ctx, m.commandDuration, d)
}

// HandlerCall records a call to an application handler.
func (m *Metrics) HandlerCall(ctx context.Context, method string, d time.Duration) {
	if m == nil {
		return
	}
	observe(ctx, m.handlerDuration.WithLabelValues(method), d)
}

// Append records one append attempt; conflict when the expected-sequence check refused it.
func (m *Metrics) Append(ctx context.Context, d time.Duration, conflict bool) {
	if m == nil {
		return
	}
	observe(ctx, m.appendDuration, d)
	if conflict {
		m.appendConflicts.Inc()
	}
}

// CacheRequest records a state-cache lookup.
func (m *Metrics) CacheRequest(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cacheRequests.WithLabelValues("hit").Inc()
	} else {
		m.cacheRequests.WithLabelValues("miss").Inc()
	}
}

// SetInflight makes cos_worker_inflight_commands report f.
func (m *Metrics) SetInflight(f func() int64) {
	if m == nil {
		return
	}
	m.inflight.Store(&f)
}

// SetWorkers makes cos_gateway_workers report f.
func (m *Metrics) SetWorkers(f func() int) {
	if m == nil {
		return
	}
	m.workers.Store(&f)
}

// WatchConnected adds a NATS connection's state to cos_nats_connected.
func (m *Metrics) WatchConnected(connected func() bool) {
	if m == nil {
		return
	}
	m.connMu.Lock()
	m.connected = append(m.connected, connected)
	m.connMu.Unlock()
}

func (m *Metrics) natsConnected() float64 {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if len(m.connected) == 0 {
		return 0
	}
	for _, c := range m.connected {
		if !c() {
			return 0
		}
	}
	return 1
}

// ReadSideKnown creates a read side's series, so they exist before its first event.
func (m *Metrics) ReadSideKnown(readSide string) {
	if m == nil {
		return
	}
	for _, o := range eventOutcomes {
		m.readSideEvents.WithLabelValues(readSide, o)
	}
	m.readSideLagSecs.WithLabelValues(readSide)
}

// ReadSideEvent counts an event outcome of a read side.
func (m *Metrics) ReadSideEvent(readSide, outcome string) {
	if m == nil {
		return
	}
	m.readSideEvents.WithLabelValues(readSide, outcome).Inc()
}

// ReadSideHandled records the time from an event being stored to a read side handling it.
func (m *Metrics) ReadSideHandled(ctx context.Context, readSide string, lag time.Duration) {
	if m == nil {
		return
	}
	observe(ctx, m.readSideLagSecs.WithLabelValues(readSide), lag)
}

// Shard reports a shard held by this projector: its pending events and its state.
func (m *Metrics) Shard(readSide string, shard int, pending uint64, state string) {
	if m == nil {
		return
	}
	s := strconv.Itoa(shard)
	m.readSideLag.WithLabelValues(readSide, s).Set(float64(pending))
	for _, st := range shardStates {
		v := 0.0
		if st == state {
			v = 1
		}
		m.shardState.WithLabelValues(readSide, s, st).Set(v)
	}
}

// ForgetShard removes a shard's series: this projector no longer holds it (another replica reports it).
func (m *Metrics) ForgetShard(readSide string, shard int) {
	if m == nil {
		return
	}
	s := strconv.Itoa(shard)
	m.readSideLag.DeleteLabelValues(readSide, s)
	for _, st := range shardStates {
		m.shardState.DeleteLabelValues(readSide, s, st)
	}
}

// observe records d, with the trace id as an exemplar when the call is part of a sampled trace.
func observe(ctx context.Context, o prometheus.Observer, d time.Duration) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsSampled() {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(d.Seconds(), prometheus.Labels{"trace_id": sc.TraceID().String()})
			return
		}
	}
	o.Observe(d.Seconds())
}
