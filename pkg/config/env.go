package config

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// legacyPrefixes and legacyNames identify the variables of the Postgres/Akka/Kubernetes
// deployment of the original service: they are accepted and ignored.
var (
	legacyPrefixes = []string{"COS_DB_", "COS_POSTGRES_", "AKKA_", "COS_AKKA_"}
	legacyNames    = map[string]bool{
		"COS_DEPLOYMENT_MODE":      true,
		"COS_REPLICA_COUNT":        true,
		"COS_KUBERNETES_APP_LABEL": true,
		"POD_IP":                   true,
	}
)

// isLegacy reports whether name is a variable of the original deployment with no meaning here.
func isLegacy(name string) bool {
	if legacyNames[name] {
		return true
	}
	for _, p := range legacyPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// FromEnv reads the configuration from environ (os.Environ form, "K=V"; when a key repeats, the
// last entry wins), applying defaults and checking the syntax of each value, then runs
// Config.Validate. An empty or blank value counts as unset. It returns the config, the sorted
// names of the legacy variables that are accepted but have no meaning here, and an error joining
// every problem found, each naming the offending variable. On error the returned Config is the
// zero value; the legacy names are returned either way.
//
// FromEnv does not require COS_WRITE_SIDE_HOST and COS_WRITE_SIDE_PORT, which only the worker
// role needs: that role must also call WriteSide.Validate.
func FromEnv(environ []string) (Config, []string, error) {
	p := &parser{env: make(map[string]string, len(environ))}
	var legacy []string
	seen := make(map[string]bool)
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		p.env[k] = v
		if isLegacy(k) && !seen[k] {
			seen[k] = true
			legacy = append(legacy, k)
		}
	}
	sort.Strings(legacy)

	c := Default()
	p.str("COS_ADDRESS", &c.Address)
	p.int("COS_PORT", &c.Port)
	p.str("COS_SERVICE_NAME", &c.ServiceName)

	w := &c.WriteSide
	p.str("COS_WRITE_SIDE_HOST", &w.Host)
	if p.int("COS_WRITE_SIDE_PORT", &w.Port) && w.Port == 0 {
		// 0 means "missing" to WriteSide.Validate, so an explicit 0 is reported here.
		p.fail("COS_WRITE_SIDE_PORT: must be between 1 and 65535, got 0")
	}
	p.bool("COS_WRITE_SIDE_USE_TLS", &w.UseTLS)
	p.str("COS_WRITE_SIDE_TLS_CA_FILE", &w.TLS.CAFile)
	p.str("COS_WRITE_SIDE_TLS_CERT_FILE", &w.TLS.CertFile)
	p.str("COS_WRITE_SIDE_TLS_KEY_FILE", &w.TLS.KeyFile)
	p.str("COS_WRITE_SIDE_TLS_SERVER_NAME", &w.TLS.ServerName)
	p.str("COS_TLS_CERT_FILE", &c.TLS.CertFile)
	p.str("COS_TLS_KEY_FILE", &c.TLS.KeyFile)
	p.str("COS_TLS_CLIENT_CA_FILE", &c.TLS.ClientCAFile)
	p.bool("COS_WRITE_SIDE_PROTO_VALIDATION", &w.ProtoValidation)
	w.EventProtos = p.list("COS_WRITE_SIDE_EVENT_PROTOS", false)
	w.StateProtos = p.list("COS_WRITE_SIDE_STATE_PROTOS", false)
	w.PropagatedHeaders = p.list("COS_WRITE_SIDE_PROPAGATED_HEADERS", true)
	w.PersistedHeaders = p.list("COS_WRITE_PERSISTED_HEADERS", true)
	p.str("COS_WRITE_SIDE_DESCRIPTORS", &w.Descriptors)
	p.bool("COS_WRITE_SIDE_REFLECTION", &w.Reflection)

	p.duration("COS_COMMAND_HANDLER_TIMEOUT", time.Second, &c.CommandTimeout)
	p.duration("COS_GRPC_CALLS_TIMEOUT", time.Millisecond, &c.HandlerCallTimeout)
	p.int("COS_SNAPSHOT_FREQUENCY", &c.SnapshotFrequency)
	p.int("COS_NUM_SNAPSHOTS_TO_RETAIN", &c.NumSnapshotsToRetain)
	p.bool("COS_DISABLE_SNAPSHOT", &c.DisableSnapshot)
	p.bool("COS_JOURNAL_LOGICAL_DELETION", &c.JournalLogicalDeletion)
	p.int("COS_NUM_SHARDS", &c.NumShards)
	p.bool("COS_READ_SIDE_ENABLED", &c.ReadSideEnabled)
	c.ReadSides = p.readSides()
	p.logLevel("LOG_LEVEL", &c.LogLevel)
	p.logStyle("LOG_STYLE", &c.LogStyle)

	n := &c.NATS
	p.str("COS_NATS_URL", &n.URL)
	p.str("COS_NATS_CREDS", &n.CredsFile)
	p.str("COS_NATS_NKEY_FILE", &n.NkeyFile)
	p.str("COS_NATS_USER", &n.User)
	p.secret("COS_NATS_PASSWORD", &n.Password)
	p.secret("COS_NATS_TOKEN", &n.Token)
	p.str("COS_NATS_TLS_CA_FILE", &n.TLSCAFile)
	p.str("COS_NATS_TLS_CERT_FILE", &n.TLSCertFile)
	p.str("COS_NATS_TLS_KEY_FILE", &n.TLSKeyFile)
	p.str("COS_NATS_LISTEN_USER", &n.ListenUser)
	p.secret("COS_NATS_LISTEN_PASSWORD", &n.ListenPassword)
	p.str("COS_NATS_LISTEN_TLS_CERT_FILE", &n.ListenTLSCertFile)
	p.str("COS_NATS_LISTEN_TLS_KEY_FILE", &n.ListenTLSKeyFile)
	p.str("COS_DATA_DIR", &n.DataDir)
	p.str("COS_NATS_LISTEN", &n.Listen)
	p.int("COS_NATS_REPLICAS", &n.Replicas)
	p.durability("COS_NATS_SYNC", &n.Durability)
	p.str("COS_NATS_PREFIX", &n.StreamPrefix)

	p.int("COS_CONFLICT_RETRIES", &c.ConflictRetries)
	p.int("COS_MAX_COMMAND_BYTES", &c.MaxCommandBytes)
	p.int("COS_IDEMPOTENCY_WINDOW", &c.IdempotencyWindow)
	p.int("COS_STATE_CACHE_ENTRIES", &c.StateCacheEntries)
	p.int64("COS_STATE_CACHE_BYTES", &c.StateCacheBytes)
	p.address("COS_METRICS_ADDRESS", &c.MetricsAddress)
	p.duration("COS_SHUTDOWN_TIMEOUT", time.Second, &c.ShutdownTimeout)
	p.int64("COS_WORKER_MAX_PENDING_BYTES", &c.MaxPendingBytes)
	p.int("COS_WORKER_MAX_ENTITY_QUEUE", &c.MaxEntityQueue)
	c.Subscription.parse(p)

	p.str("COS_ADMIN_ADDRESS", &c.AdminAddress)

	in := &c.Intake
	p.bool("COS_INTAKE_ENABLED", &in.Enabled)
	p.int64("COS_INTAKE_MAX_MESSAGES", &in.MaxMessages)
	p.int64("COS_INTAKE_MAX_BYTES", &in.MaxBytes)
	p.duration("COS_INTAKE_MAX_AGE", time.Second, &in.MaxAge)
	p.duration("COS_INTAKE_DUPLICATE_WINDOW", time.Second, &in.Duplicates)
	p.duration("COS_INTAKE_OUTCOME_MAX_AGE", time.Second, &in.OutcomeMaxAge)
	p.int("COS_INTAKE_MAX_IN_FLIGHT", &in.MaxInFlight)

	// A value that failed to parse left its default in place, so Validate reports only the
	// other problems and the user sees everything at once.
	if err := c.Validate(); err != nil {
		p.errs = append(p.errs, err)
	}
	if err := errors.Join(p.errs...); err != nil {
		return Config{}, legacy, err
	}
	return c, legacy, nil
}

// parser reads typed values from an environment, collecting errors. Each method leaves its
// destination unchanged when the variable is unset, empty or invalid.
type parser struct {
	env  map[string]string
	errs []error
}

func (p *parser) fail(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(format, args...))
}

// lookup returns the trimmed value of name and whether it is set and not blank.
func (p *parser) lookup(name string) (string, bool) {
	v := strings.TrimSpace(p.env[name])
	return v, v != ""
}

func (p *parser) str(name string, dst *string) {
	if v, ok := p.lookup(name); ok {
		*dst = v
	}
}

// int parses a decimal integer and reports whether dst was set.
func (p *parser) int(name string, dst *int) bool {
	v, ok := p.lookup(name)
	if !ok {
		return false
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			p.fail("%s: %q is out of range", name, v)
		} else {
			p.fail("%s: %q is not a number", name, v)
		}
		return false
	}
	*dst = n
	return true
}

// int64 parses a decimal 64-bit integer.
func (p *parser) int64(name string, dst *int64) {
	v, ok := p.lookup(name)
	if !ok {
		return
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			p.fail("%s: %q is out of range", name, v)
		} else {
			p.fail("%s: %q is not a number", name, v)
		}
		return
	}
	*dst = n
}

// address reads an optional listen address: unlike other variables, a variable that is set but
// empty means "off" (dst becomes ""), while an unset one keeps the default.
func (p *parser) address(name string, dst *string) {
	v, set := p.env[name]
	if !set {
		return
	}
	*dst = strings.TrimSpace(v)
}

// duration parses a decimal count of unit.
func (p *parser) duration(name string, unit time.Duration, dst *time.Duration) {
	var n int
	if !p.int(name, &n) {
		return
	}
	limit := int64(math.MaxInt64 / unit)
	if int64(n) > limit || int64(n) < -limit {
		p.fail("%s: %d is out of range", name, n)
		return
	}
	*dst = time.Duration(n) * unit
}

func (p *parser) bool(name string, dst *bool) {
	v, ok := p.lookup(name)
	if !ok {
		return
	}
	switch strings.ToLower(v) {
	case "true", "1", "yes":
		*dst = true
	case "false", "0", "no":
		*dst = false
	default:
		p.fail("%s: %q is not a boolean (use true/false, 1/0 or yes/no)", name, v)
	}
}

func (p *parser) logLevel(name string, dst *slog.Level) {
	v, ok := p.lookup(name)
	if !ok {
		return
	}
	switch strings.ToUpper(v) {
	case "DEBUG":
		*dst = slog.LevelDebug
	case "INFO":
		*dst = slog.LevelInfo
	case "WARN", "WARNING":
		*dst = slog.LevelWarn
	case "ERROR":
		*dst = slog.LevelError
	default:
		p.fail("%s: %q is not a log level (use DEBUG, INFO, WARN or ERROR)", name, v)
	}
}

func (p *parser) logStyle(name string, dst *LogStyle) {
	v, ok := p.lookup(name)
	if !ok {
		return
	}
	s := LogStyle(strings.ToUpper(v))
	if !s.valid() {
		p.fail("%s: %q is not a log style (use JSON, STANDARD or SIMPLE)", name, v)
		return
	}
	*dst = s
}

func (p *parser) durability(name string, dst *Durability) {
	v, ok := p.lookup(name)
	if !ok {
		return
	}
	d := Durability(strings.ToLower(v))
	if !d.valid() {
		p.fail("%s: %q is not a sync mode (use interval or always)", name, v)
		return
	}
	*dst = d
}

// list splits a comma-separated value, trimming entries and dropping empties and duplicates
// (first-seen order). With header set, entries are lowercased gRPC metadata keys and invalid
// keys are reported and dropped.
func (p *parser) list(name string, header bool) []string {
	v, ok := p.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	seen := make(map[string]bool)
	for _, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if header {
			item = strings.ToLower(item)
		}
		if item == "" || seen[item] {
			continue
		}
		seen[item] = true
		if header && !validMetadataKey(item) {
			p.fail("%s: %s", name, badKeyMessage(item))
			continue
		}
		out = append(out, item)
	}
	return out
}
