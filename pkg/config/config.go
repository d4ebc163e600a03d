package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// LogStyle selects the output format of the logger built by Config.NewLogger.
type LogStyle string

// The log styles accepted in LOG_STYLE.
const (
	// LogStyleJSON writes one JSON object per line (slog.JSONHandler).
	LogStyleJSON LogStyle = "JSON"
	// LogStyleStandard writes logfmt-style key=value lines (slog.TextHandler).
	LogStyleStandard LogStyle = "STANDARD"
	// LogStyleSimple is LogStyleStandard without the time attribute.
	LogStyleSimple LogStyle = "SIMPLE"
)

// Durability selects when the embedded NATS server fsyncs JetStream writes.
type Durability string

// The durability modes accepted in COS_NATS_SYNC.
const (
	// DurabilityInterval keeps the nats-server default sync_interval: acks are not fsynced.
	DurabilityInterval Durability = "interval"
	// DurabilityAlways sets sync_interval: always, so every write is fsynced before it is acked.
	DurabilityAlways Durability = "always"
)

// Values applied when a variable is unset or empty.
const (
	defaultAddress            = "0.0.0.0"
	defaultPort               = 9000
	defaultServiceName        = "chiefofstate"
	defaultCommandTimeout     = 5 * time.Second
	defaultHandlerCallTimeout = 60000 * time.Millisecond
	defaultSnapshotFrequency  = 100
	defaultSnapshotsToRetain  = 2
	defaultNumShards          = 9
	defaultLogLevel           = slog.LevelInfo
	defaultLogStyle           = LogStyleJSON
	defaultDataDir            = "./data"
	defaultReplicas           = 1
	defaultDurability         = DurabilityInterval
	defaultStreamPrefix       = "COS"
	defaultConflictRetries    = 32
	defaultMaxCommandBytes    = 524288
	defaultIdempotencyWindow  = 16
	defaultStateCacheEntries  = 10000
	defaultStateCacheBytes    = 64 << 20
	defaultMetricsAddress     = "0.0.0.0:9102"
	defaultShutdownTimeout    = 25 * time.Second
	defaultMaxPendingBytes    = 64 << 20
	defaultMaxEntityQueue     = 256
)

// Config is the whole configuration of a chief-of-state process. The comment of each field
// names its environment variable, its default in brackets and its valid range.
type Config struct {
	Address     string    // COS_ADDRESS [0.0.0.0]: gRPC listen address
	Port        int       // COS_PORT [9000], 1..65535: gRPC listen port
	ServiceName string    // COS_SERVICE_NAME [chiefofstate]
	WriteSide   WriteSide // COS_WRITE_SIDE_*: the user's write-side handler
	TLS         ServerTLS // COS_TLS_*: TLS (and mTLS) of the gRPC server; plaintext when unset

	CommandTimeout     time.Duration // COS_COMMAND_HANDLER_TIMEOUT, whole seconds [5]; > 0
	HandlerCallTimeout time.Duration // COS_GRPC_CALLS_TIMEOUT, milliseconds [60000]; > 0

	SnapshotFrequency      int  // COS_SNAPSHOT_FREQUENCY [100], >= 0: KV snapshot every this many revisions (0 = none)
	NumSnapshotsToRetain   int  // COS_NUM_SNAPSHOTS_TO_RETAIN [2], >= 0 (accepted; unused)
	DisableSnapshot        bool // COS_DISABLE_SNAPSHOT [false]: when true no KV snapshots are written
	JournalLogicalDeletion bool // COS_JOURNAL_LOGICAL_DELETION [false] (accepted; unused)

	NumShards       int  // COS_NUM_SHARDS [9], 1..1024
	ReadSideEnabled bool // COS_READ_SIDE_ENABLED [false]
	// ReadSides are the user's read sides, sorted by ID: from the YAML file or folder at
	// COS_READ_SIDE_CONFIG when set, else from the COS_READ_SIDE_CONFIG__<SETTING>__<ID>
	// variables. They are parsed whenever present; ReadSideEnabled decides whether they run
	// (see EnabledReadSides).
	ReadSides []ReadSide

	LogLevel slog.Level // LOG_LEVEL DEBUG/INFO/WARN(ING)/ERROR, case-insensitive [INFO]
	LogStyle LogStyle   // LOG_STYLE JSON/STANDARD/SIMPLE, case-insensitive [JSON]

	NATS NATS // COS_NATS_*, COS_DATA_DIR: the NATS connection or embedded server

	// ConflictRetries (COS_CONFLICT_RETRIES [32], 1..1000) is how often a worker reloads and
	// retries after an optimistic-concurrency conflict.
	ConflictRetries int
	// MaxCommandBytes (COS_MAX_COMMAND_BYTES [524288], 1..8388608) is the largest serialized
	// command Any accepted.
	MaxCommandBytes int
	// IdempotencyWindow (COS_IDEMPOTENCY_WINDOW [16], 0..256) is the number of command ids
	// remembered per entity.
	IdempotencyWindow int
	// StateCacheEntries (COS_STATE_CACHE_ENTRIES [10000], 0..10000000) is the size of the
	// worker's in-memory state cache; 0 turns it off.
	StateCacheEntries int
	// StateCacheBytes (COS_STATE_CACHE_BYTES [67108864], 0..68719476736) bounds the same cache by
	// the encoded size of the states it holds; 0 turns it off.
	StateCacheBytes int64

	// MetricsAddress (COS_METRICS_ADDRESS [0.0.0.0:9102]) is the host:port of the HTTP listener
	// serving /metrics, /healthz and /readyz; set it to an empty value to turn the listener off.
	MetricsAddress string
	// ShutdownTimeout (COS_SHUTDOWN_TIMEOUT, whole seconds [25], 1..3600) bounds the drain on
	// SIGTERM: queued and running commands and in-flight read-side calls finish within it.
	ShutdownTimeout time.Duration
	// MaxPendingBytes (COS_WORKER_MAX_PENDING_BYTES [67108864], 1048576..17179869184) bounds the
	// encoded size of the commands a worker holds but has not started; beyond it a command is
	// refused with UNAVAILABLE before anything is done.
	MaxPendingBytes int64
	// MaxEntityQueue (COS_WORKER_MAX_ENTITY_QUEUE [256], 1..100000) bounds the commands of one
	// entity a worker holds behind the one it runs; beyond it a command is refused the same way.
	MaxEntityQueue int

	Intake Intake // COS_INTAKE_*: the NATS producer API

	// AdminAddress (COS_ADMIN_ADDRESS, host:port, default empty) moves the operator's services
	// (ReadSideManagerService, ReadSideStatusService, IntakeService, gRPC reflection) from the main
	// port to a listener of their own, e.g. 127.0.0.1:9001; empty keeps them on the main port, as COS.
	AdminAddress string

	Subscription Subscription // COS_SUBSCRIPTION_*: live subscriptions
}

// Intake configures the NATS producer API the gateways serve: the synchronous subject
// <root>.process and the asynchronous intake stream <PREFIX>_INTAKE (docs/nats-producers.md).
type Intake struct {
	// Enabled (COS_INTAKE_ENABLED [true]) turns both on; gateways then create the intake and
	// outcome streams.
	Enabled bool
	// MaxMessages (COS_INTAKE_MAX_MESSAGES [1000000], 0 = unlimited) and MaxBytes
	// (COS_INTAKE_MAX_BYTES [1073741824], 0 = unlimited) bound the commands waiting in the
	// intake; a full intake refuses new publishes.
	MaxMessages int64
	MaxBytes    int64
	// MaxAge (COS_INTAKE_MAX_AGE, whole seconds [0] = forever) drops commands waiting longer,
	// without an outcome.
	MaxAge time.Duration
	// Duplicates (COS_INTAKE_DUPLICATE_WINDOW, whole seconds [120], 1..86400) is how long a
	// Nats-Msg-Id is remembered by the intake stream.
	Duplicates time.Duration
	// OutcomeMaxAge (COS_INTAKE_OUTCOME_MAX_AGE, whole seconds [604800], 60..31536000) is how long
	// outcomes and rejected commands are kept.
	OutcomeMaxAge time.Duration
	// MaxInFlight (COS_INTAKE_MAX_IN_FLIGHT [1000], 1..100000) bounds the intake commands running at
	// once (one at a time per entity).
	MaxInFlight int
}

// WriteSide describes the user's write-side handler (WriteSideHandlerService).
type WriteSide struct {
	Host   string // COS_WRITE_SIDE_HOST (required for the worker role)
	Port   int    // COS_WRITE_SIDE_PORT (required for the worker role), 1..65535
	UseTLS bool   // COS_WRITE_SIDE_USE_TLS [false]: TLS with the system roots
	// TLS (COS_WRITE_SIDE_TLS_CA_FILE, COS_WRITE_SIDE_TLS_CERT_FILE + COS_WRITE_SIDE_TLS_KEY_FILE,
	// COS_WRITE_SIDE_TLS_SERVER_NAME): a custom CA, a client certificate (mTLS) and a server name
	// override; any of them turns TLS on.
	TLS ClientTLS

	// ProtoValidation (COS_WRITE_SIDE_PROTO_VALIDATION [false]) restricts the events and states
	// returned by the handler to EventProtos and StateProtos, which must then both be non-empty.
	ProtoValidation bool
	EventProtos     []string // COS_WRITE_SIDE_EVENT_PROTOS: comma-separated full message names
	StateProtos     []string // COS_WRITE_SIDE_STATE_PROTOS: comma-separated full message names

	// PropagatedHeaders (COS_WRITE_SIDE_PROPAGATED_HEADERS) are the gRPC metadata keys copied
	// from the incoming request to the handler call; lowercase, characters [a-z0-9-_.].
	PropagatedHeaders []string
	// PersistedHeaders (COS_WRITE_PERSISTED_HEADERS, note: no _SIDE_) are the gRPC metadata
	// keys stored with the events; lowercase, characters [a-z0-9-_.].
	PersistedHeaders []string

	// Descriptors (COS_WRITE_SIDE_DESCRIPTORS) is an optional FileDescriptorSet file (protoc
	// --include_imports --descriptor_set_out) with the handler's commands, events and states, so
	// commands can arrive as JSON over NATS and outcomes leave as JSON.
	Descriptors string
	// Reflection (COS_WRITE_SIDE_REFLECTION [true]) lets gateways ask the write handler's gRPC
	// server reflection for message types not in Descriptors (when COS_WRITE_SIDE_HOST is set).
	Reflection bool
}

// NATS describes how this process reaches NATS JetStream.
type NATS struct {
	URL       string // COS_NATS_URL; empty = embedded NATS server (single-process mode)
	CredsFile string // COS_NATS_CREDS: optional path to a NATS credentials file (external server)
	// External server only, at most one authentication method among CredsFile, NkeyFile,
	// User+Password and Token:
	NkeyFile string // COS_NATS_NKEY_FILE: a file holding an nkey seed (SU...)
	User     string // COS_NATS_USER, with Password
	Password Secret // COS_NATS_PASSWORD, or the content of the file COS_NATS_PASSWORD_FILE
	Token    Secret // COS_NATS_TOKEN, or the content of the file COS_NATS_TOKEN_FILE
	// TLSCAFile (COS_NATS_TLS_CA_FILE) is the PEM CA the server's certificate must chain to; with
	// TLSCertFile (COS_NATS_TLS_CERT_FILE) and TLSKeyFile (COS_NATS_TLS_KEY_FILE) a client
	// certificate. Any of them requires TLS (external server only).
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string
	DataDir     string // COS_DATA_DIR [./data]: embedded server storage
	// Listen (COS_NATS_LISTEN) is an optional host:port on which the embedded server also
	// accepts TCP clients; empty = in-process connections only.
	Listen string
	// ListenUser (COS_NATS_LISTEN_USER) and ListenPassword (COS_NATS_LISTEN_PASSWORD or the file
	// COS_NATS_LISTEN_PASSWORD_FILE) are the credentials TCP clients of Listen must present; required
	// when Listen is not a loopback address. This process's own in-process connections need none.
	ListenUser     string
	ListenPassword Secret
	// ListenTLSCertFile (COS_NATS_LISTEN_TLS_CERT_FILE) and ListenTLSKeyFile
	// (COS_NATS_LISTEN_TLS_KEY_FILE): when set, Listen requires TLS with this certificate.
	ListenTLSCertFile string
	ListenTLSKeyFile  string
	Replicas          int        // COS_NATS_REPLICAS [1], 1..5: replicas of the streams/buckets created
	Durability        Durability // COS_NATS_SYNC [interval]: "interval" or "always" (embedded server only)
	// StreamPrefix (COS_NATS_PREFIX [COS]) prefixes the stream and bucket names; it must match
	// ^[A-Za-z0-9_-]{1,32}$.
	StreamPrefix string
}

// Embedded reports whether this process runs its own NATS server, that is whether COS_NATS_URL
// is empty.
func (n NATS) Embedded() bool {
	return strings.TrimSpace(n.URL) == ""
}

// Default returns the configuration of an empty environment. Its WriteSide is empty, so it
// passes Config.Validate but not WriteSide.Validate.
func Default() Config {
	return Config{
		Address:              defaultAddress,
		Port:                 defaultPort,
		ServiceName:          defaultServiceName,
		CommandTimeout:       defaultCommandTimeout,
		HandlerCallTimeout:   defaultHandlerCallTimeout,
		SnapshotFrequency:    defaultSnapshotFrequency,
		NumSnapshotsToRetain: defaultSnapshotsToRetain,
		NumShards:            defaultNumShards,
		LogLevel:             defaultLogLevel,
		LogStyle:             defaultLogStyle,
		NATS: NATS{
			DataDir:      defaultDataDir,
			Replicas:     defaultReplicas,
			Durability:   defaultDurability,
			StreamPrefix: defaultStreamPrefix,
		},
		ConflictRetries:   defaultConflictRetries,
		MaxCommandBytes:   defaultMaxCommandBytes,
		IdempotencyWindow: defaultIdempotencyWindow,
		StateCacheEntries: defaultStateCacheEntries,
		StateCacheBytes:   defaultStateCacheBytes,
		MetricsAddress:    defaultMetricsAddress,
		ShutdownTimeout:   defaultShutdownTimeout,
		MaxPendingBytes:   defaultMaxPendingBytes,
		MaxEntityQueue:    defaultMaxEntityQueue,
		Subscription:      defaultSubscription(),
		WriteSide:         WriteSide{Reflection: true},
		Intake: Intake{
			Enabled:       true,
			MaxMessages:   1000000,
			MaxBytes:      1 << 30,
			Duplicates:    2 * time.Minute,
			OutcomeMaxAge: 7 * 24 * time.Hour,
			MaxInFlight:   1000,
		},
	}
}

// NewLogger builds a *slog.Logger writing to w with the configured level and style: JSON uses
// slog.NewJSONHandler, STANDARD and SIMPLE use slog.NewTextHandler, and SIMPLE omits the time
// attribute. An unknown or empty style falls back to JSON.
func (c Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	var h slog.Handler
	switch c.LogStyle {
	case LogStyleStandard:
		h = slog.NewTextHandler(w, opts)
	case LogStyleSimple:
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
		h = slog.NewTextHandler(w, opts)
	default:
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h)
}

// Load is what every main does first: read the environment, build the logger and say once which
// legacy COS settings are ignored.
func Load(environ []string, logOutput io.Writer) (Config, *slog.Logger, error) {
	cfg, ignored, err := FromEnv(environ)
	if err != nil {
		return Config{}, nil, fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := cfg.NewLogger(logOutput).With("service", cfg.ServiceName)
	if len(ignored) > 0 {
		log.Info("ignoring settings that have no meaning on NATS", "variables", ignored)
	}
	return cfg, log, nil
}
