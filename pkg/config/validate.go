package config

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// streamPrefixRE is the syntax of COS_NATS_PREFIX.
var streamPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (s LogStyle) valid() bool {
	return s == LogStyleJSON || s == LogStyleStandard || s == LogStyleSimple
}

func (d Durability) valid() bool {
	return d == DurabilityInterval || d == DurabilityAlways
}

// validMetadataKey reports whether k is a lowercase gRPC metadata key.
func validMetadataKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func badKeyMessage(k string) string {
	return fmt.Sprintf("%q is not a valid gRPC metadata key (allowed characters: a-z 0-9 - _ .)", k)
}

// validHost reports whether h is non-empty and free of spaces and slashes (a host name or IP
// address, not a URL).
func validHost(h string) bool {
	return h != "" && !strings.ContainsAny(h, " \t\r\n/")
}

// checker collects validation errors.
type checker struct{ errs []error }

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) between(name string, v, lo, hi int) {
	if v < lo || v > hi {
		c.fail("%s: must be between %d and %d, got %d", name, lo, hi, v)
	}
}

func (c *checker) between64(name string, v, lo, hi int64) {
	if v < lo || v > hi {
		c.fail("%s: must be between %d and %d, got %d", name, lo, hi, v)
	}
}

func (c *checker) nonNegative(name string, v int) {
	if v < 0 {
		c.fail("%s: must not be negative, got %d", name, v)
	}
}

// Validate checks ranges and cross-field rules of a configuration, for instance one built in
// code rather than by FromEnv. It does not require the write-side host and port (see
// WriteSide.Validate) but checks them when set. It checks each read side (see ReadSide.Validate)
// and that no read side id repeats; having none is valid. Every message names the environment
// variable, or the read side for read-side problems; all problems are returned at once, joined
// with errors.Join.
func (c Config) Validate() error {
	var k checker
	k.between("COS_PORT", c.Port, 1, 65535)
	if strings.TrimSpace(c.ServiceName) == "" {
		k.fail("COS_SERVICE_NAME: must not be empty")
	}
	if c.CommandTimeout <= 0 {
		k.fail("COS_COMMAND_HANDLER_TIMEOUT: must be greater than 0, got %v", c.CommandTimeout)
	}
	if c.HandlerCallTimeout <= 0 {
		k.fail("COS_GRPC_CALLS_TIMEOUT: must be greater than 0, got %v", c.HandlerCallTimeout)
	}
	k.nonNegative("COS_SNAPSHOT_FREQUENCY", c.SnapshotFrequency)
	k.nonNegative("COS_NUM_SNAPSHOTS_TO_RETAIN", c.NumSnapshotsToRetain)
	k.between("COS_NUM_SHARDS", c.NumShards, 1, 1024)
	if !c.LogStyle.valid() {
		k.fail("LOG_STYLE: must be JSON, STANDARD or SIMPLE, got %q", c.LogStyle)
	}
	c.NATS.check(&k)
	c.TLS.check(&k)
	k.between("COS_CONFLICT_RETRIES", c.ConflictRetries, 1, 1000)
	k.between("COS_MAX_COMMAND_BYTES", c.MaxCommandBytes, 1, 8388608)
	k.between("COS_IDEMPOTENCY_WINDOW", c.IdempotencyWindow, 0, 256)
	k.between("COS_STATE_CACHE_ENTRIES", c.StateCacheEntries, 0, 10000000)
	k.between64("COS_STATE_CACHE_BYTES", c.StateCacheBytes, 0, 64<<30)
	if c.MetricsAddress != "" {
		checkHostPort(&k, "COS_METRICS_ADDRESS", c.MetricsAddress)
	}
	if c.ShutdownTimeout < time.Second || c.ShutdownTimeout > time.Hour {
		k.fail("COS_SHUTDOWN_TIMEOUT: must be between 1 and 3600 seconds, got %v", c.ShutdownTimeout)
	}
	k.between64("COS_WORKER_MAX_PENDING_BYTES", c.MaxPendingBytes, 1<<20, 16<<30)
	k.between("COS_WORKER_MAX_ENTITY_QUEUE", c.MaxEntityQueue, 1, 100000)
	c.Subscription.check(&k)
	c.WriteSide.check(&k, false)
	c.Intake.check(&k)
	if c.AdminAddress != "" {
		checkHostPort(&k, "COS_ADMIN_ADDRESS", c.AdminAddress)
	}
	checkReadSides(&k, c.ReadSides)
	return errors.Join(k.errs...)
}

func (in Intake) check(k *checker) {
	k.between64("COS_INTAKE_MAX_MESSAGES", in.MaxMessages, 0, 1<<40)
	k.between64("COS_INTAKE_MAX_BYTES", in.MaxBytes, 0, 1<<50)
	if in.MaxAge < 0 {
		k.fail("COS_INTAKE_MAX_AGE: must be >= 0 seconds, got %v", in.MaxAge)
	}
	if in.Duplicates < time.Second || in.Duplicates > 24*time.Hour {
		k.fail("COS_INTAKE_DUPLICATE_WINDOW: must be between 1 and 86400 seconds, got %v", in.Duplicates)
	}
	if in.OutcomeMaxAge < time.Minute || in.OutcomeMaxAge > 365*24*time.Hour {
		k.fail("COS_INTAKE_OUTCOME_MAX_AGE: must be between 60 and 31536000 seconds, got %v", in.OutcomeMaxAge)
	}
	if in.MaxAge > 0 && in.Duplicates > in.MaxAge {
		k.fail("COS_INTAKE_DUPLICATE_WINDOW: %v must not exceed COS_INTAKE_MAX_AGE %v", in.Duplicates, in.MaxAge)
	}
	k.between("COS_INTAKE_MAX_IN_FLIGHT", in.MaxInFlight, 1, 100000)
}

func (n NATS) check(k *checker) {
	k.between("COS_NATS_REPLICAS", n.Replicas, 1, 5)
	if !n.Durability.valid() {
		k.fail("COS_NATS_SYNC: must be interval or always, got %q", n.Durability)
	}
	if !streamPrefixRE.MatchString(n.StreamPrefix) {
		k.fail("COS_NATS_PREFIX: %q must be 1 to 32 characters among A-Z a-z 0-9 _ -", n.StreamPrefix)
	}
	if n.Embedded() {
		if strings.TrimSpace(n.DataDir) == "" {
			k.fail("COS_DATA_DIR: must not be empty when the embedded NATS server is used (COS_NATS_URL unset)")
		}
		if n.Replicas > 1 {
			k.fail("COS_NATS_REPLICAS: must be 1 with the embedded single-node NATS server (COS_NATS_URL unset), got %d", n.Replicas)
		}
		n.checkSecurity(k)
		if n.Listen != "" {
			checkHostPort(k, "COS_NATS_LISTEN", n.Listen)
		}
		return
	}
	if n.Listen != "" {
		k.fail("COS_NATS_LISTEN: only applies to the embedded NATS server; unset COS_NATS_URL or COS_NATS_LISTEN")
	}
	n.checkSecurity(k)
	if n.Durability == DurabilityAlways {
		k.fail("COS_NATS_SYNC: %q only applies to the embedded NATS server; configure sync_interval on the server at COS_NATS_URL instead", n.Durability)
	}
}

func checkHostPort(k *checker, name, v string) {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		k.fail("%s: %q is not host:port: %v", name, v, err)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		k.fail("%s: %q has an invalid port (use 0 to 65535)", name, v)
	}
}

// Validate checks the write-side handler settings needed by the worker role: host and port
// present and valid, message names present when proto validation is on, and valid metadata
// keys. Every message names the environment variable; all problems are joined with errors.Join.
func (w WriteSide) Validate() error {
	var k checker
	w.check(&k, true)
	return errors.Join(k.errs...)
}

// check validates w; required makes a missing host or port an error.
func (w WriteSide) check(k *checker, required bool) {
	switch {
	case w.Host == "":
		if required {
			k.fail("COS_WRITE_SIDE_HOST: required")
		}
	case !validHost(w.Host):
		k.fail("COS_WRITE_SIDE_HOST: %q is not a host name or IP address", w.Host)
	}
	switch {
	case w.Port == 0:
		if required {
			k.fail("COS_WRITE_SIDE_PORT: required")
		}
	default:
		k.between("COS_WRITE_SIDE_PORT", w.Port, 1, 65535)
	}
	if w.ProtoValidation {
		if len(w.EventProtos) == 0 {
			k.fail("COS_WRITE_SIDE_EVENT_PROTOS: required when COS_WRITE_SIDE_PROTO_VALIDATION is true")
		}
		if len(w.StateProtos) == 0 {
			k.fail("COS_WRITE_SIDE_STATE_PROTOS: required when COS_WRITE_SIDE_PROTO_VALIDATION is true")
		}
	}
	w.TLS.check(k, func(field string) string { return "COS_WRITE_SIDE_TLS_" + field })
	for _, h := range w.PropagatedHeaders {
		if !validMetadataKey(h) {
			k.fail("COS_WRITE_SIDE_PROPAGATED_HEADERS: %s", badKeyMessage(h))
		}
	}
	for _, h := range w.PersistedHeaders {
		if !validMetadataKey(h) {
			k.fail("COS_WRITE_PERSISTED_HEADERS: %s", badKeyMessage(h))
		}
	}
}
