package config

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFromEnvDefaults(t *testing.T) {
	for _, env := range [][]string{nil, {}, {"COS_PORT=", "LOG_LEVEL=  ", "UNRELATED=1", "NOEQUALS"}} {
		c, legacy, err := FromEnv(env)
		if err != nil {
			t.Fatalf("FromEnv(%q): %v", env, err)
		}
		if len(legacy) != 0 {
			t.Errorf("legacy = %q, want none", legacy)
		}
		want := Config{
			Address:              "0.0.0.0",
			Port:                 9000,
			ServiceName:          "chiefofstate",
			CommandTimeout:       5 * time.Second,
			HandlerCallTimeout:   60 * time.Second,
			SnapshotFrequency:    100,
			NumSnapshotsToRetain: 2,
			NumShards:            9,
			LogLevel:             slog.LevelInfo,
			LogStyle:             LogStyleJSON,
			NATS: NATS{
				DataDir:      "./data",
				Replicas:     1,
				Durability:   DurabilityInterval,
				StreamPrefix: "COS",
			},
			ConflictRetries:   32,
			MaxCommandBytes:   524288,
			IdempotencyWindow: 16,
			StateCacheEntries: 10000,
			StateCacheBytes:   64 << 20,
			MetricsAddress:    "0.0.0.0:9102",
			ShutdownTimeout:   25 * time.Second,
			MaxPendingBytes:   64 << 20,
			MaxEntityQueue:    256,
			Subscription:      Subscription{Enabled: true, Buffer: 128, StallTimeout: time.Second},
			WriteSide:         WriteSide{Reflection: true},
			Intake: Intake{Enabled: true, MaxMessages: 1000000, MaxBytes: 1 << 30, Duplicates: 2 * time.Minute,
				OutcomeMaxAge: 7 * 24 * time.Hour, MaxInFlight: 1000},
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("FromEnv(%q) =\n%+v\nwant\n%+v", env, c, want)
		}
		if !reflect.DeepEqual(Default(), want) {
			t.Errorf("Default() = %+v", Default())
		}
		if !c.NATS.Embedded() {
			t.Error("Embedded() = false without COS_NATS_URL")
		}
		if err := c.WriteSide.Validate(); err == nil {
			t.Error("WriteSide.Validate() accepted a missing host and port")
		}
	}
}

func TestFromEnvAllVariables(t *testing.T) {
	env := []string{
		"COS_ADDRESS=127.0.0.1",
		"COS_PORT=9100",
		"COS_SERVICE_NAME= accounts ",
		"COS_WRITE_SIDE_HOST=handler.svc",
		"COS_WRITE_SIDE_PORT=50051",
		"COS_WRITE_SIDE_USE_TLS=YES",
		"COS_WRITE_SIDE_PROTO_VALIDATION=1",
		"COS_WRITE_SIDE_EVENT_PROTOS=pkg.Opened, pkg.Closed",
		"COS_WRITE_SIDE_STATE_PROTOS=pkg.Account",
		"COS_WRITE_SIDE_PROPAGATED_HEADERS=X-Request-Id, authorization",
		"COS_WRITE_PERSISTED_HEADERS=x-user.id",
		"COS_COMMAND_HANDLER_TIMEOUT=7",
		"COS_GRPC_CALLS_TIMEOUT=1500",
		"COS_SNAPSHOT_FREQUENCY=0",
		"COS_NUM_SNAPSHOTS_TO_RETAIN=3",
		"COS_DISABLE_SNAPSHOT=true",
		"COS_JOURNAL_LOGICAL_DELETION=True",
		"COS_NUM_SHARDS=16",
		"COS_READ_SIDE_ENABLED=yes",
		"LOG_LEVEL=warning",
		"LOG_STYLE=simple",
		"COS_NATS_URL=nats://a:4222,nats://b:4222",
		"COS_NATS_CREDS=/etc/nats/cos.creds",
		"COS_DATA_DIR=/var/lib/cos",
		"COS_NATS_REPLICAS=3",
		"COS_NATS_SYNC=Interval",
		"COS_NATS_PREFIX=cos_prod-1",
		"COS_CONFLICT_RETRIES=5",
		"COS_MAX_COMMAND_BYTES=1024",
		"COS_IDEMPOTENCY_WINDOW=0",
		"COS_STATE_CACHE_ENTRIES=0",
		"COS_STATE_CACHE_BYTES=1048576",
		"COS_METRICS_ADDRESS=",
		"COS_SHUTDOWN_TIMEOUT=40",
		"COS_WORKER_MAX_PENDING_BYTES=2097152",
		"COS_WORKER_MAX_ENTITY_QUEUE=10",
		"COS_ADMIN_ADDRESS=127.0.0.1:9001",
		"COS_WRITE_SIDE_DESCRIPTORS=/etc/cos/handler.pb",
		"COS_WRITE_SIDE_REFLECTION=false",
		"COS_INTAKE_ENABLED=false",
		"COS_INTAKE_MAX_MESSAGES=0",
		"COS_INTAKE_MAX_BYTES=4096",
		"COS_INTAKE_MAX_AGE=3600",
		"COS_INTAKE_DUPLICATE_WINDOW=30",
		"COS_INTAKE_OUTCOME_MAX_AGE=7200",
		"COS_INTAKE_MAX_IN_FLIGHT=7",
	}
	c, legacy, err := FromEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(legacy) != 0 {
		t.Errorf("legacy = %q", legacy)
	}
	want := Config{
		Address:     "127.0.0.1",
		Port:        9100,
		ServiceName: "accounts",
		WriteSide: WriteSide{
			Host:              "handler.svc",
			Port:              50051,
			UseTLS:            true,
			ProtoValidation:   true,
			EventProtos:       []string{"pkg.Opened", "pkg.Closed"},
			StateProtos:       []string{"pkg.Account"},
			PropagatedHeaders: []string{"x-request-id", "authorization"},
			PersistedHeaders:  []string{"x-user.id"},
			Descriptors:       "/etc/cos/handler.pb",
			Reflection:        false,
		},
		CommandTimeout:         7 * time.Second,
		HandlerCallTimeout:     1500 * time.Millisecond,
		SnapshotFrequency:      0,
		NumSnapshotsToRetain:   3,
		DisableSnapshot:        true,
		JournalLogicalDeletion: true,
		NumShards:              16,
		ReadSideEnabled:        true,
		LogLevel:               slog.LevelWarn,
		LogStyle:               LogStyleSimple,
		NATS: NATS{
			URL:          "nats://a:4222,nats://b:4222",
			CredsFile:    "/etc/nats/cos.creds",
			DataDir:      "/var/lib/cos",
			Replicas:     3,
			Durability:   DurabilityInterval,
			StreamPrefix: "cos_prod-1",
		},
		ConflictRetries:   5,
		MaxCommandBytes:   1024,
		IdempotencyWindow: 0,
		StateCacheEntries: 0,
		StateCacheBytes:   1 << 20,
		MetricsAddress:    "", // set but empty: off
		ShutdownTimeout:   40 * time.Second,
		MaxPendingBytes:   2 << 20,
		MaxEntityQueue:    10,
		Subscription:      Subscription{Enabled: true, Buffer: 128, StallTimeout: time.Second},
		AdminAddress:      "127.0.0.1:9001",
		Intake: Intake{Enabled: false, MaxMessages: 0, MaxBytes: 4096, MaxAge: time.Hour, Duplicates: 30 * time.Second,
			OutcomeMaxAge: 2 * time.Hour, MaxInFlight: 7},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c, want)
	}
	if c.NATS.Embedded() {
		t.Error("Embedded() = true with COS_NATS_URL set")
	}
	if err := c.WriteSide.Validate(); err != nil {
		t.Errorf("WriteSide.Validate: %v", err)
	}
}

func TestFromEnvEmbeddedOptions(t *testing.T) {
	c, _, err := FromEnv([]string{
		"COS_NATS_LISTEN=127.0.0.1:0", "COS_NATS_SYNC=ALWAYS", "LOG_LEVEL=Debug", "LOG_STYLE=Standard",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.Listen != "127.0.0.1:0" || c.NATS.Durability != DurabilityAlways ||
		c.LogLevel != slog.LevelDebug || c.LogStyle != LogStyleStandard {
		t.Errorf("got %+v", c)
	}
}

func TestFromEnvParsing(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		get  func(Config) any
		want any
	}{
		{"bool 0", []string{"COS_DISABLE_SNAPSHOT=0"}, func(c Config) any { return c.DisableSnapshot }, false},
		{"bool NO", []string{"COS_READ_SIDE_ENABLED=NO"}, func(c Config) any { return c.ReadSideEnabled }, false},
		{"bool FALSE", []string{"COS_WRITE_SIDE_USE_TLS=FALSE"}, func(c Config) any { return c.WriteSide.UseTLS }, false},
		{"bool TRUE", []string{"COS_WRITE_SIDE_USE_TLS=TRUE"}, func(c Config) any { return c.WriteSide.UseTLS }, true},
		{"level error", []string{"LOG_LEVEL=ERROR"}, func(c Config) any { return c.LogLevel }, slog.LevelError},
		{"level warn", []string{"LOG_LEVEL=warn"}, func(c Config) any { return c.LogLevel }, slog.LevelWarn},
		{"level info", []string{"LOG_LEVEL=info"}, func(c Config) any { return c.LogLevel }, slog.LevelInfo},
		{"style json", []string{"LOG_STYLE=json"}, func(c Config) any { return c.LogStyle }, LogStyleJSON},
		{"last entry wins", []string{"COS_PORT=1", "COS_PORT=2"}, func(c Config) any { return c.Port }, 2},
		{"value with =", []string{"COS_SERVICE_NAME=a=b"}, func(c Config) any { return c.ServiceName }, "a=b"},
		{"event protos", []string{"COS_WRITE_SIDE_EVENT_PROTOS= a.B , ,a.B,c "},
			func(c Config) any { return c.WriteSide.EventProtos }, []string{"a.B", "c"}},
		{"state protos", []string{"COS_WRITE_SIDE_STATE_PROTOS=,x.Y,,x.Y,"},
			func(c Config) any { return c.WriteSide.StateProtos }, []string{"x.Y"}},
		{"only commas", []string{"COS_WRITE_SIDE_STATE_PROTOS= , ,"},
			func(c Config) any { return c.WriteSide.StateProtos }, []string(nil)},
		{"propagated headers", []string{"COS_WRITE_SIDE_PROPAGATED_HEADERS= X-Trace ,x-trace, a_b.c-1 ,"},
			func(c Config) any { return c.WriteSide.PropagatedHeaders }, []string{"x-trace", "a_b.c-1"}},
		{"persisted headers", []string{"COS_WRITE_PERSISTED_HEADERS=B,a,b"},
			func(c Config) any { return c.WriteSide.PersistedHeaders }, []string{"b", "a"}},
		{"side-named persisted ignored", []string{"COS_WRITE_SIDE_PERSISTED_HEADERS=a"},
			func(c Config) any { return c.WriteSide.PersistedHeaders }, []string(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := FromEnv(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestFromEnvErrors(t *testing.T) {
	tests := []struct {
		env  string
		want string // substring of the error, after the variable name
	}{
		{"COS_PORT=abc", `COS_PORT: "abc" is not a number`},
		{"COS_PORT=0", "COS_PORT: must be between 1 and 65535, got 0"},
		{"COS_PORT=65536", "COS_PORT: must be between 1 and 65535"},
		{"COS_PORT=99999999999999999999", "COS_PORT: \"99999999999999999999\" is out of range"},
		{"COS_WRITE_SIDE_PORT=x", `COS_WRITE_SIDE_PORT: "x" is not a number`},
		{"COS_WRITE_SIDE_PORT=0", "COS_WRITE_SIDE_PORT: must be between 1 and 65535, got 0"},
		{"COS_WRITE_SIDE_PORT=70000", "COS_WRITE_SIDE_PORT: must be between 1 and 65535, got 70000"},
		{"COS_WRITE_SIDE_HOST=http://h", "COS_WRITE_SIDE_HOST:"},
		{"COS_WRITE_SIDE_USE_TLS=maybe", `COS_WRITE_SIDE_USE_TLS: "maybe" is not a boolean`},
		{"COS_WRITE_SIDE_PROTO_VALIDATION=on", `COS_WRITE_SIDE_PROTO_VALIDATION: "on"`},
		{"COS_WRITE_SIDE_PROTO_VALIDATION=true", "COS_WRITE_SIDE_EVENT_PROTOS: required"},
		{"COS_WRITE_SIDE_PROTO_VALIDATION=true", "COS_WRITE_SIDE_STATE_PROTOS: required"},
		{"COS_WRITE_SIDE_PROPAGATED_HEADERS=ok,bad key", `COS_WRITE_SIDE_PROPAGATED_HEADERS: "bad key"`},
		{"COS_WRITE_PERSISTED_HEADERS=x:y", `COS_WRITE_PERSISTED_HEADERS: "x:y"`},
		{"COS_COMMAND_HANDLER_TIMEOUT=0", "COS_COMMAND_HANDLER_TIMEOUT: must be greater than 0"},
		{"COS_COMMAND_HANDLER_TIMEOUT=1.5", `COS_COMMAND_HANDLER_TIMEOUT: "1.5" is not a number`},
		{"COS_COMMAND_HANDLER_TIMEOUT=99999999999", "COS_COMMAND_HANDLER_TIMEOUT: 99999999999 is out of range"},
		{"COS_GRPC_CALLS_TIMEOUT=-1", "COS_GRPC_CALLS_TIMEOUT: must be greater than 0"},
		{"COS_GRPC_CALLS_TIMEOUT=5s", `COS_GRPC_CALLS_TIMEOUT: "5s" is not a number`},
		{"COS_SNAPSHOT_FREQUENCY=-1", "COS_SNAPSHOT_FREQUENCY: must not be negative"},
		{"COS_NUM_SNAPSHOTS_TO_RETAIN=two", "COS_NUM_SNAPSHOTS_TO_RETAIN:"},
		{"COS_NUM_SNAPSHOTS_TO_RETAIN=-2", "COS_NUM_SNAPSHOTS_TO_RETAIN: must not be negative"},
		{"COS_DISABLE_SNAPSHOT=2", "COS_DISABLE_SNAPSHOT:"},
		{"COS_JOURNAL_LOGICAL_DELETION=y", "COS_JOURNAL_LOGICAL_DELETION:"},
		{"COS_NUM_SHARDS=0", "COS_NUM_SHARDS: must be between 1 and 1024, got 0"},
		{"COS_NUM_SHARDS=1025", "COS_NUM_SHARDS: must be between 1 and 1024, got 1025"},
		{"COS_READ_SIDE_ENABLED=enabled", "COS_READ_SIDE_ENABLED:"},
		{"LOG_LEVEL=TRACE", `LOG_LEVEL: "TRACE"`},
		{"LOG_STYLE=pretty", `LOG_STYLE: "pretty"`},
		{"COS_NATS_REPLICAS=0", "COS_NATS_REPLICAS: must be between 1 and 5"},
		{"COS_NATS_REPLICAS=3", "COS_NATS_REPLICAS: must be 1 with the embedded"},
		{"COS_NATS_SYNC=never", `COS_NATS_SYNC: "never"`},
		{"COS_NATS_PREFIX=a.b", `COS_NATS_PREFIX: "a.b"`},
		{"COS_NATS_PREFIX=" + strings.Repeat("x", 33), "COS_NATS_PREFIX:"},
		{"COS_NATS_LISTEN=localhost", `COS_NATS_LISTEN: "localhost" is not host:port`},
		{"COS_NATS_LISTEN=:http", "COS_NATS_LISTEN:"},
		{"COS_NATS_CREDS=/x.creds", "COS_NATS_CREDS: only applies to an external"},
		{"COS_CONFLICT_RETRIES=0", "COS_CONFLICT_RETRIES: must be between 1 and 1000"},
		{"COS_CONFLICT_RETRIES=1001", "COS_CONFLICT_RETRIES:"},
		{"COS_MAX_COMMAND_BYTES=8388609", "COS_MAX_COMMAND_BYTES: must be between 1 and 8388608"},
		{"COS_MAX_COMMAND_BYTES=0", "COS_MAX_COMMAND_BYTES:"},
		{"COS_IDEMPOTENCY_WINDOW=257", "COS_IDEMPOTENCY_WINDOW: must be between 0 and 256"},
		{"COS_IDEMPOTENCY_WINDOW=-1", "COS_IDEMPOTENCY_WINDOW:"},
		{"COS_STATE_CACHE_ENTRIES=10000001", "COS_STATE_CACHE_ENTRIES: must be between 0 and 10000000"},
		{"COS_STATE_CACHE_ENTRIES=lots", "COS_STATE_CACHE_ENTRIES:"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			name, _, _ := strings.Cut(tt.env, "=")
			c, _, err := FromEnv([]string{tt.env})
			if err == nil {
				t.Fatalf("no error, config %+v", c)
			}
			if !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !reflect.DeepEqual(c, Config{}) {
				t.Errorf("config on error = %+v, want zero value", c)
			}
		})
	}
}

func TestFromEnvExternalServerOnlyOptions(t *testing.T) {
	for _, env := range []string{"COS_NATS_LISTEN=:4222", "COS_NATS_SYNC=always"} {
		name, _, _ := strings.Cut(env, "=")
		_, _, err := FromEnv([]string{"COS_NATS_URL=nats://n:4222", env})
		if err == nil || !strings.Contains(err.Error(), name+": ") {
			t.Errorf("%s with COS_NATS_URL: error %v, want one naming %s", env, err, name)
		}
	}
}

func TestFromEnvJoinsAllErrors(t *testing.T) {
	_, _, err := FromEnv([]string{
		"COS_PORT=abc", "COS_NUM_SHARDS=0", "LOG_STYLE=x", "COS_DISABLE_SNAPSHOT=2", "COS_WRITE_SIDE_PORT=0",
	})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, name := range []string{"COS_PORT:", "COS_NUM_SHARDS:", "LOG_STYLE:", "COS_DISABLE_SNAPSHOT:", "COS_WRITE_SIDE_PORT:"} {
		if strings.Count(msg, name) != 1 {
			t.Errorf("error should name %s exactly once:\n%s", name, msg)
		}
	}
}
