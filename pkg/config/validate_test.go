package config

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLegacyVariables(t *testing.T) {
	env := []string{
		"POD_IP=10.0.0.1",
		"COS_DB_HOST=pg",
		"COS_POSTGRES_USER=cos",
		"AKKA_CLUSTER_ROLES=x",
		"COS_AKKA_PORT=2552",
		"COS_DEPLOYMENT_MODE=kubernetes",
		"COS_REPLICA_COUNT=3",
		"COS_KUBERNETES_APP_LABEL=cos",
		"COS_DB_HOST=pg2",
		"COS_JOURNAL_LOGICAL_DELETION=true",
		"COS_DEPLOYMENT_MODE_X=1",
		"OTEL_SERVICE_NAME=cos",
		"COS_DB_PASSWORD=", // empty values are still reported
	}
	c, legacy, err := FromEnv(env)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"AKKA_CLUSTER_ROLES", "COS_AKKA_PORT", "COS_DB_HOST", "COS_DB_PASSWORD", "COS_DEPLOYMENT_MODE",
		"COS_KUBERNETES_APP_LABEL", "COS_POSTGRES_USER", "COS_REPLICA_COUNT", "POD_IP",
	}
	if !reflect.DeepEqual(legacy, want) {
		t.Errorf("legacy = %q, want %q", legacy, want)
	}
	if !c.JournalLogicalDeletion {
		t.Error("COS_JOURNAL_LOGICAL_DELETION was not parsed")
	}
	// Legacy names are reported even when the configuration is invalid.
	_, legacy, err = FromEnv([]string{"COS_DB_USER=x", "COS_PORT=x"})
	if err == nil || !reflect.DeepEqual(legacy, []string{"COS_DB_USER"}) {
		t.Errorf("legacy = %q, err = %v", legacy, err)
	}
}

func TestWriteSideValidate(t *testing.T) {
	ok := WriteSide{Host: "h", Port: 1}
	tests := []struct {
		name  string
		mod   func(*WriteSide)
		wants []string // empty = valid
	}{
		{"valid", func(*WriteSide) {}, nil},
		{"missing both", func(w *WriteSide) { *w = WriteSide{} },
			[]string{"COS_WRITE_SIDE_HOST: required", "COS_WRITE_SIDE_PORT: required"}},
		{"port range", func(w *WriteSide) { w.Port = 65536 }, []string{"COS_WRITE_SIDE_PORT: must be between"}},
		{"negative port", func(w *WriteSide) { w.Port = -1 }, []string{"COS_WRITE_SIDE_PORT:"}},
		{"host with space", func(w *WriteSide) { w.Host = "a b" }, []string{"COS_WRITE_SIDE_HOST:"}},
		{"proto validation", func(w *WriteSide) { w.ProtoValidation = true },
			[]string{"COS_WRITE_SIDE_EVENT_PROTOS:", "COS_WRITE_SIDE_STATE_PROTOS:"}},
		{"proto validation ok", func(w *WriteSide) {
			w.ProtoValidation, w.EventProtos, w.StateProtos = true, []string{"a.E"}, []string{"a.S"}
		}, nil},
		{"uppercase header", func(w *WriteSide) { w.PropagatedHeaders = []string{"X-Id"} },
			[]string{"COS_WRITE_SIDE_PROPAGATED_HEADERS:"}},
		{"empty header", func(w *WriteSide) { w.PersistedHeaders = []string{""} },
			[]string{"COS_WRITE_PERSISTED_HEADERS:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ok
			tt.mod(&w)
			err := w.Validate()
			if len(tt.wants) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range tt.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string // empty = valid
	}{
		{"default", func(*Config) {}, ""},
		{"sub-second timeouts", func(c *Config) { c.CommandTimeout, c.HandlerCallTimeout = time.Millisecond, 1 }, ""},
		{"external replicas", func(c *Config) { c.NATS.URL, c.NATS.Replicas = "nats://x", 5 }, ""},
		{"empty service name", func(c *Config) { c.ServiceName = " " }, "COS_SERVICE_NAME:"},
		{"zero command timeout", func(c *Config) { c.CommandTimeout = 0 }, "COS_COMMAND_HANDLER_TIMEOUT:"},
		{"zero call timeout", func(c *Config) { c.HandlerCallTimeout = 0 }, "COS_GRPC_CALLS_TIMEOUT:"},
		{"unknown style", func(c *Config) { c.LogStyle = "json" }, "LOG_STYLE:"},
		{"unknown durability", func(c *Config) { c.NATS.Durability = "" }, "COS_NATS_SYNC:"},
		{"empty prefix", func(c *Config) { c.NATS.StreamPrefix = "" }, "COS_NATS_PREFIX:"},
		{"empty data dir", func(c *Config) { c.NATS.DataDir = "" }, "COS_DATA_DIR:"},
		{"listen port", func(c *Config) { c.NATS.Listen = "h:70000" }, "COS_NATS_LISTEN:"},
		{"replicas range", func(c *Config) { c.NATS.URL, c.NATS.Replicas = "nats://x", 6 }, "COS_NATS_REPLICAS:"},
		{"write-side port", func(c *Config) { c.WriteSide.Port = -5 }, "COS_WRITE_SIDE_PORT:"},
		{"metrics off", func(c *Config) { c.MetricsAddress = "" }, ""},
		{"metrics address", func(c *Config) { c.MetricsAddress = "9102" }, "COS_METRICS_ADDRESS:"},
		{"shutdown timeout", func(c *Config) { c.ShutdownTimeout = 0 }, "COS_SHUTDOWN_TIMEOUT:"},
		{"pending bytes", func(c *Config) { c.MaxPendingBytes = 1000 }, "COS_WORKER_MAX_PENDING_BYTES:"},
		{"entity queue", func(c *Config) { c.MaxEntityQueue = 0 }, "COS_WORKER_MAX_ENTITY_QUEUE:"},
		{"cache bytes", func(c *Config) { c.StateCacheBytes = -1 }, "COS_STATE_CACHE_BYTES:"},
		{"admin address", func(c *Config) { c.AdminAddress = "9001" }, "COS_ADMIN_ADDRESS:"},
		{"admin listener", func(c *Config) { c.AdminAddress = "127.0.0.1:9001" }, ""},
		{"intake unlimited", func(c *Config) { c.Intake.MaxMessages, c.Intake.MaxBytes = 0, 0 }, ""},
		{"intake messages", func(c *Config) { c.Intake.MaxMessages = -1 }, "COS_INTAKE_MAX_MESSAGES:"},
		{"intake bytes", func(c *Config) { c.Intake.MaxBytes = -1 }, "COS_INTAKE_MAX_BYTES:"},
		{"intake age", func(c *Config) { c.Intake.MaxAge = -time.Second }, "COS_INTAKE_MAX_AGE:"},
		{"intake window", func(c *Config) { c.Intake.Duplicates = 0 }, "COS_INTAKE_DUPLICATE_WINDOW:"},
		{"intake window over age", func(c *Config) { c.Intake.MaxAge = time.Minute }, "must not exceed COS_INTAKE_MAX_AGE"},
		{"outcome age", func(c *Config) { c.Intake.OutcomeMaxAge = time.Second }, "COS_INTAKE_OUTCOME_MAX_AGE:"},
		{"intake in flight", func(c *Config) { c.Intake.MaxInFlight = 0 }, "COS_INTAKE_MAX_IN_FLIGHT:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mod(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v does not contain %q", err, tt.want)
			}
		})
	}
}

func TestNewLogger(t *testing.T) {
	t.Run("JSON", func(t *testing.T) {
		var buf bytes.Buffer
		c := Default()
		c.NewLogger(&buf).Info("hello", "entity", "e-1")
		line, _, _ := strings.Cut(buf.String(), "\n")
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		if m["msg"] != "hello" || m["level"] != "INFO" || m["entity"] != "e-1" || m["time"] == nil {
			t.Errorf("unexpected record %v", m)
		}
	})
	t.Run("level", func(t *testing.T) {
		var buf bytes.Buffer
		c := Default()
		c.LogLevel = slog.LevelWarn
		l := c.NewLogger(&buf)
		l.Info("dropped")
		l.Warn("kept")
		if strings.Contains(buf.String(), "dropped") || !strings.Contains(buf.String(), "kept") {
			t.Errorf("output %q", buf.String())
		}
	})
	for _, tt := range []struct {
		style    LogStyle
		wantTime bool
	}{{LogStyleStandard, true}, {LogStyleSimple, false}} {
		t.Run(string(tt.style), func(t *testing.T) {
			var buf bytes.Buffer
			c := Default()
			c.LogStyle = tt.style
			c.NewLogger(&buf).Info("hello", slog.Group("g", "time", "kept"))
			out := buf.String()
			if got := strings.HasPrefix(out, "time="); got != tt.wantTime {
				t.Errorf("time attribute present = %v, want %v: %q", got, tt.wantTime, out)
			}
			if !strings.Contains(out, "level=INFO msg=hello g.time=kept") {
				t.Errorf("output %q", out)
			}
			if json.Valid([]byte(out)) {
				t.Errorf("text style produced JSON: %q", out)
			}
		})
	}
}
