package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// rs is a read side with every default applied and the given id, host and port.
func rs(id, host string, port int) ReadSide {
	return ReadSide{ID: id, Host: host, Port: port, AutoStart: true, Enabled: true, Timeout: 30 * time.Second, MaxInFlight: 64}
}

// writeFile writes content to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantErrors fails unless err contains every string of wants, and checks the zero Config.
func wantErrors(t *testing.T, c Config, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, read sides %+v", c.ReadSides)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
	if !reflect.DeepEqual(c, Config{}) {
		t.Errorf("config on error = %+v, want zero value", c)
	}
}

func TestReadSidesEnv(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		want []ReadSide
	}{
		{"none", []string{"COS_READ_SIDE_ENABLED=true"}, nil},
		{"all settings", []string{
			"COS_READ_SIDE_CONFIG__HOST__accounts-db= rs.svc ",
			"COS_READ_SIDE_CONFIG__PORT__accounts-db=50052",
			"COS_READ_SIDE_CONFIG__USE_TLS__accounts-db=true",
			"COS_READ_SIDE_CONFIG__AUTO_START__accounts-db=false",
			"COS_READ_SIDE_CONFIG__ENABLED__accounts-db=no",
			"COS_READ_SIDE_CONFIG__FAILURE_POLICY__accounts-db=replay-skip",
			"COS_READ_SIDE_CONFIG__TIMEOUT__accounts-db=1500",
			"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__accounts-db=1",
		}, []ReadSide{{
			ID: "accounts-db", Host: "rs.svc", Port: 50052, UseTLS: true, AutoStart: false, Enabled: false,
			FailurePolicy: FailureReplaySkip, Timeout: 1500 * time.Millisecond, MaxInFlight: 1,
		}}},
		{"defaults", []string{"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1"},
			[]ReadSide{rs("a", "h", 1)}},
		{"sorted by id, verbatim ids", []string{
			"COS_READ_SIDE_CONFIG__HOST__b_2=h2", "COS_READ_SIDE_CONFIG__PORT__b_2=2",
			"COS_READ_SIDE_CONFIG__PORT__B=3", "COS_READ_SIDE_CONFIG__HOST__B=h3",
			"COS_READ_SIDE_CONFIG__HOST__a1=h1", "COS_READ_SIDE_CONFIG__PORT__a1=65535",
		}, []ReadSide{rs("B", "h3", 3), rs("a1", "h1", 65535), rs("b_2", "h2", 2)}},
		{"blank values count as unset", []string{
			"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1",
			"COS_READ_SIDE_CONFIG__TIMEOUT__a=", "COS_READ_SIDE_CONFIG__ENABLED__a= ",
			"COS_READ_SIDE_CONFIG__HOST__unset=",
		}, []ReadSide{rs("a", "h", 1)}},
		{"single-character id", []string{"COS_READ_SIDE_CONFIG__HOST__x=h", "COS_READ_SIDE_CONFIG__PORT__x=9"},
			[]ReadSide{rs("x", "h", 9)}},
		{"single underscore is not the prefix", []string{"COS_READ_SIDE_CONFIG_HOST_a=h"}, nil},
		{"parsed while read sides are disabled", []string{
			"COS_READ_SIDE_ENABLED=false", "COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1",
		}, []ReadSide{rs("a", "h", 1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := FromEnv(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.ReadSides, tt.want) {
				t.Errorf("got\n%+v\nwant\n%+v", c.ReadSides, tt.want)
			}
		})
	}
}

func TestReadSideFailurePolicies(t *testing.T) {
	tests := []struct {
		value string
		want  FailurePolicy
	}{
		{"STOP", FailureStop},
		{"stop", FailureStop},
		{"Skip", FailureSkip},
		{"SKIP", FailureSkip},
		{"REPLAY_SKIP", FailureReplaySkip},
		{"replay_skip", FailureReplaySkip},
		{"REPLAY-SKIP", FailureReplaySkip},
		{"Replay-Skip", FailureReplaySkip},
		{"REPLAY_STOP", FailureReplayStop},
		{"REPLAY-STOP", FailureReplayStop},
		{"replay-stop", FailureReplayStop},
		{"RETRY", FailureRetry},
		{"retry", FailureRetry},
		{"", FailureRetry},
	}
	for _, tt := range tests {
		t.Run("env "+tt.value, func(t *testing.T) {
			c, _, err := FromEnv([]string{
				"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1",
				"COS_READ_SIDE_CONFIG__FAILURE_POLICY__a=" + tt.value,
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.ReadSides[0].FailurePolicy; got != tt.want {
				t.Errorf("policy = %q, want %q", got, tt.want)
			}
		})
		t.Run("yaml "+tt.value, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "rs.yaml",
				"readSideId: a\nhost: h\nport: 1\nfailurePolicy: \""+tt.value+"\"\n")
			c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + path})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.ReadSides[0].FailurePolicy; got != tt.want {
				t.Errorf("policy = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadSidesEnvErrors(t *testing.T) {
	valid := []string{"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1"}
	tests := []struct {
		name  string
		env   []string
		wants []string
	}{
		{"bad policy", []string{"COS_READ_SIDE_CONFIG__FAILURE_POLICY__a=RESTART"},
			[]string{`COS_READ_SIDE_CONFIG__FAILURE_POLICY__a: "RESTART" is not a failure policy (use STOP, SKIP, REPLAY_SKIP, REPLAY_STOP, REPLAY-SKIP, REPLAY-STOP, or RETRY`}},
		{"policy with space", []string{"COS_READ_SIDE_CONFIG__FAILURE_POLICY__a=REPLAY SKIP"},
			[]string{"COS_READ_SIDE_CONFIG__FAILURE_POLICY__a:"}},
		{"two-part key", []string{"COS_READ_SIDE_CONFIG__HOST=h"},
			[]string{"COS_READ_SIDE_CONFIG__HOST: must have the form COS_READ_SIDE_CONFIG__<SETTING>__<READSIDE_ID> (3 parts separated by __, got 2)"}},
		{"four-part key", []string{"COS_READ_SIDE_CONFIG__HOST__a__b=h"},
			[]string{"COS_READ_SIDE_CONFIG__HOST__a__b: must have the form", "got 4"}},
		{"empty setting", []string{"COS_READ_SIDE_CONFIG____a=h"},
			[]string{`COS_READ_SIDE_CONFIG____a: unknown setting ""`}},
		{"unknown setting", []string{"COS_READ_SIDE_CONFIG__ADDRESS__a=h"},
			[]string{`COS_READ_SIDE_CONFIG__ADDRESS__a: unknown setting "ADDRESS" (use HOST, PORT, USE_TLS, AUTO_START, ENABLED, FAILURE_POLICY, TIMEOUT, MAX_IN_FLIGHT, TLS_CA_FILE, TLS_CERT_FILE, TLS_KEY_FILE or TLS_SERVER_NAME)`}},
		{"lowercase setting", []string{"COS_READ_SIDE_CONFIG__host__a=h"},
			[]string{`COS_READ_SIDE_CONFIG__host__a: unknown setting "host"`}},
		{"missing host", []string{"COS_READ_SIDE_CONFIG__PORT__b=1"},
			[]string{"COS_READ_SIDE_CONFIG__HOST__b: required"}},
		{"missing port", []string{"COS_READ_SIDE_CONFIG__HOST__b=h"},
			[]string{"COS_READ_SIDE_CONFIG__PORT__b: required"}},
		{"blank host", []string{"COS_READ_SIDE_CONFIG__HOST__b= ", "COS_READ_SIDE_CONFIG__PORT__b=1"},
			[]string{"COS_READ_SIDE_CONFIG__HOST__b: required"}},
		{"missing both", []string{"COS_READ_SIDE_CONFIG__USE_TLS__b=true"},
			[]string{"COS_READ_SIDE_CONFIG__HOST__b: required", "COS_READ_SIDE_CONFIG__PORT__b: required"}},
		{"id starting with a hyphen", []string{"COS_READ_SIDE_CONFIG__HOST__-a=h"},
			[]string{`COS_READ_SIDE_CONFIG__HOST__-a: "-a" is not a valid read side id (it must match ^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$)`}},
		{"id ending with an underscore", []string{"COS_READ_SIDE_CONFIG__PORT__a_=1"},
			[]string{`COS_READ_SIDE_CONFIG__PORT__a_: "a_" is not a valid read side id`}},
		{"id with a dot", []string{"COS_READ_SIDE_CONFIG__HOST__a.b=h"},
			[]string{`COS_READ_SIDE_CONFIG__HOST__a.b: "a.b" is not a valid read side id`}},
		{"id with three underscores", []string{"COS_READ_SIDE_CONFIG__HOST___a=h"},
			[]string{`COS_READ_SIDE_CONFIG__HOST___a: "_a" is not a valid read side id`}},
		{"empty id", []string{"COS_READ_SIDE_CONFIG__HOST__=h"},
			[]string{`COS_READ_SIDE_CONFIG__HOST__: "" is not a valid read side id`}},
		{"host is a URL", []string{"COS_READ_SIDE_CONFIG__HOST__a=http://h"},
			[]string{`COS_READ_SIDE_CONFIG__HOST__a: "http://h" is not a host name or IP address`}},
		{"port not a number", []string{"COS_READ_SIDE_CONFIG__PORT__a=http"},
			[]string{`COS_READ_SIDE_CONFIG__PORT__a: "http" is not a number`}},
		{"port 0", []string{"COS_READ_SIDE_CONFIG__PORT__a=0"},
			[]string{"COS_READ_SIDE_CONFIG__PORT__a: must be between 1 and 65535, got 0"}},
		{"port too large", []string{"COS_READ_SIDE_CONFIG__PORT__a=65536"},
			[]string{"COS_READ_SIDE_CONFIG__PORT__a: must be between 1 and 65535, got 65536"}},
		{"bad bool", []string{"COS_READ_SIDE_CONFIG__USE_TLS__a=on"},
			[]string{`COS_READ_SIDE_CONFIG__USE_TLS__a: "on" is not a boolean`}},
		{"bad auto start", []string{"COS_READ_SIDE_CONFIG__AUTO_START__a=paused"},
			[]string{`COS_READ_SIDE_CONFIG__AUTO_START__a: "paused" is not a boolean`}},
		{"bad enabled", []string{"COS_READ_SIDE_CONFIG__ENABLED__a=2"},
			[]string{`COS_READ_SIDE_CONFIG__ENABLED__a: "2" is not a boolean`}},
		{"timeout 0", []string{"COS_READ_SIDE_CONFIG__TIMEOUT__a=0"},
			[]string{"COS_READ_SIDE_CONFIG__TIMEOUT__a: must be greater than 0, got 0s"}},
		{"negative timeout", []string{"COS_READ_SIDE_CONFIG__TIMEOUT__a=-5"},
			[]string{"COS_READ_SIDE_CONFIG__TIMEOUT__a: must be greater than 0, got -5ms"}},
		{"max in flight 0", []string{"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__a=0"},
			[]string{"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__a: must be between 1 and 10000, got 0"}},
		{"max in flight too large", []string{"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__a=10001"},
			[]string{"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__a: must be between 1 and 10000, got 10001"}},
		{"max in flight not a number", []string{"COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__a=many"},
			[]string{`COS_READ_SIDE_CONFIG__MAX_IN_FLIGHT__a: "many" is not a number`}},
		{"timeout with unit", []string{"COS_READ_SIDE_CONFIG__TIMEOUT__a=5s"},
			[]string{`COS_READ_SIDE_CONFIG__TIMEOUT__a: "5s" is not a number`}},
		{"timeout out of range", []string{"COS_READ_SIDE_CONFIG__TIMEOUT__a=9223372036854775"},
			[]string{"COS_READ_SIDE_CONFIG__TIMEOUT__a: 9223372036854775 is out of range"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Later entries override the valid ones.
			c, _, err := FromEnv(append(append([]string(nil), valid...), tt.env...))
			wantErrors(t, c, err, tt.wants...)
		})
	}
}

func TestReadSidesEnvErrorsReportedOnce(t *testing.T) {
	_, _, err := FromEnv([]string{
		"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=x",
		"COS_READ_SIDE_CONFIG__FAILURE_POLICY__a=never", "COS_READ_SIDE_CONFIG__TIMEOUT__a=t",
		"COS_READ_SIDE_CONFIG__PORT__b=1", "COS_READ_SIDE_CONFIG__X__b=1", "COS_PORT=0",
	})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, name := range []string{
		"COS_READ_SIDE_CONFIG__PORT__a:", "COS_READ_SIDE_CONFIG__FAILURE_POLICY__a:",
		"COS_READ_SIDE_CONFIG__TIMEOUT__a:", "COS_READ_SIDE_CONFIG__HOST__b: required",
		"COS_READ_SIDE_CONFIG__X__b:", "COS_PORT:",
	} {
		if strings.Count(msg, name) != 1 {
			t.Errorf("error should name %s exactly once:\n%s", name, msg)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n != 6 {
		t.Errorf("%d errors, want 6:\n%s", n, msg)
	}
}

const twoDocuments = `# read sides of the accounts service
---
readSideId: zeta
host: zeta.svc
port: 50051
---
---
readSideId: alpha
host: 10.0.0.7
port: 6000
useTls: true
autoStart: false
enabled: false
failurePolicy: STOP
timeout: 250
maxInFlight: 8
---
~
---
{}
`

func TestReadSidesFile(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "readsides.yaml", twoDocuments)
	c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + path})
	if err != nil {
		t.Fatal(err)
	}
	want := []ReadSide{
		{ID: "alpha", Host: "10.0.0.7", Port: 6000, UseTLS: true, FailurePolicy: FailureStop, Timeout: 250 * time.Millisecond, MaxInFlight: 8},
		rs("zeta", "zeta.svc", 50051),
	}
	if !reflect.DeepEqual(c.ReadSides, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c.ReadSides, want)
	}
}

func TestReadSidesFolder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "b.yml", "readSideId: first\nhost: h1\nport: 1\n")
	writeFile(t, dir, "a.yaml", "readSideId: second\nhost: h2\nport: 2\nfailurePolicy: replay-stop\n---\n")
	writeFile(t, dir, "notes.txt", "not: yaml: at all")
	writeFile(t, dir, ".hidden.yaml", "unknown: key")
	writeFile(t, dir, "empty.yaml", "")
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub.yaml"), "c.yaml", "readSideId: nested\nhost: h\nport: 3\n")
	// A ConfigMap mount: the files are symbolic links.
	target := writeFile(t, t.TempDir(), "target", "readSideId: linked\nhost: h3\nport: 3\n")
	if err := os.Symlink(target, filepath.Join(dir, "c.yaml")); err != nil {
		t.Fatal(err)
	}

	c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + dir})
	if err != nil {
		t.Fatal(err)
	}
	second := rs("second", "h2", 2)
	second.FailurePolicy = FailureReplayStop
	want := []ReadSide{rs("first", "h1", 1), rs("linked", "h3", 3), second}
	if !reflect.DeepEqual(c.ReadSides, want) {
		t.Errorf("got\n%+v\nwant\n%+v", c.ReadSides, want)
	}

	t.Run("empty folder", func(t *testing.T) {
		c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + t.TempDir(), "COS_READ_SIDE_ENABLED=true"})
		if err != nil || c.ReadSides != nil {
			t.Errorf("read sides %+v, error %v", c.ReadSides, err)
		}
	})
}

func TestReadSidesFileReplacesEnv(t *testing.T) {
	path := writeFile(t, t.TempDir(), "rs.yaml", "readSideId: fromfile\nhost: f\nport: 7\n")
	c, _, err := FromEnv([]string{
		"COS_READ_SIDE_CONFIG__HOST__fromenv=e",
		"COS_READ_SIDE_CONFIG__PORT__fromenv=8",
		"COS_READ_SIDE_CONFIG__HOST=invalid-but-ignored",
		"COS_READ_SIDE_CONFIG__BOGUS__x=ignored",
		"COS_READ_SIDE_CONFIG= " + path + " ",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []ReadSide{rs("fromfile", "f", 7)}; !reflect.DeepEqual(c.ReadSides, want) {
		t.Errorf("got %+v, want %+v", c.ReadSides, want)
	}
	// A blank COS_READ_SIDE_CONFIG counts as unset: the env form applies.
	c, _, err = FromEnv([]string{
		"COS_READ_SIDE_CONFIG= ", "COS_READ_SIDE_CONFIG__HOST__fromenv=e", "COS_READ_SIDE_CONFIG__PORT__fromenv=8",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []ReadSide{rs("fromenv", "e", 8)}; !reflect.DeepEqual(c.ReadSides, want) {
		t.Errorf("got %+v, want %+v", c.ReadSides, want)
	}
}

func TestReadSidesFileErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string // file name -> content; the folder is used when there are several
		wants []string          // "FILE" is replaced by the path of the first file (sorted)
	}{
		{"unknown key", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nretries: 3\n"},
			[]string{`COS_READ_SIDE_CONFIG: FILE: document 1: line 4: unknown key "retries" (known keys: readSideId, host, port, useTls, autoStart, enabled, failurePolicy, timeout, maxInFlight, tlsCaFile, tlsCertFile, tlsKeyFile, tlsServerName)`}},
		{"wrong case key", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nuseTLS: true\n"},
			[]string{`FILE: document 1: line 4: unknown key "useTLS"`}},
		{"unknown key and missing port", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nprt: 1\n"},
			[]string{`FILE: document 1: line 3: unknown key "prt"`, "FILE: document 1: port: required"}},
		{"bad id", map[string]string{"rs.yaml": "readSideId: a.b\nhost: h\nport: 1\n"},
			[]string{`COS_READ_SIDE_CONFIG: FILE: document 1: readSideId: "a.b" is not a valid read side id (it must match ^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$)`}},
		{"id with a trailing hyphen", map[string]string{"rs.yaml": "readSideId: a-\nhost: h\nport: 1\n"},
			[]string{`FILE: document 1: readSideId: "a-" is not a valid read side id`}},
		{"missing id", map[string]string{"rs.yaml": "host: h\nport: 1\n"},
			[]string{"FILE: document 1: readSideId: required"}},
		{"missing host and port", map[string]string{"rs.yaml": "readSideId: a\n---\nreadSideId: b\nhost: h\nport: ~\n"},
			[]string{"FILE: document 1: host: required", "FILE: document 1: port: required", "FILE: document 2: port: required"}},
		{"port 0", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 0\n"},
			[]string{"FILE: document 1: port: must be between 1 and 65535, got 0"}},
		{"port too large", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 65536\n"},
			[]string{"FILE: document 1: port: must be between 1 and 65535, got 65536"}},
		{"port not a number", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: http\n"},
			[]string{"FILE: document 1: port: line 3: cannot unmarshal !!str `http` into int"}},
		{"host is a URL", map[string]string{"rs.yaml": "readSideId: a\nhost: http://h\nport: 1\n"},
			[]string{`FILE: document 1: host: "http://h" is not a host name or IP address`}},
		{"bad bool", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nenabled: maybe\n"},
			[]string{"FILE: document 1: enabled: line 4: cannot unmarshal !!str `maybe` into bool"}},
		{"timeout 0", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\ntimeout: 0\n"},
			[]string{"FILE: document 1: timeout: must be greater than 0, got 0s"}},
		{"max in flight 0", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nmaxInFlight: 0\n"},
			[]string{"FILE: document 1: maxInFlight: must be between 1 and 10000, got 0"}},
		{"max in flight not a number", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nmaxInFlight: lots\n"},
			[]string{"FILE: document 1: maxInFlight: line 4: cannot unmarshal !!str `lots` into int"}},
		{"timeout with unit", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\ntimeout: 5s\n"},
			[]string{"FILE: document 1: timeout: line 4: cannot unmarshal !!str `5s` into int64"}},
		{"timeout out of range", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\ntimeout: 9223372036854775\n"},
			[]string{"FILE: document 1: timeout: 9223372036854775 is out of range"}},
		{"bad policy", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nfailurePolicy: sometimes\n"},
			[]string{`FILE: document 1: failurePolicy: "sometimes" is not a failure policy (use STOP, SKIP, REPLAY_SKIP`}},
		{"not a mapping", map[string]string{"rs.yaml": "- readSideId: a\n"},
			[]string{"FILE: document 1: line 1: cannot unmarshal !!seq into a read side mapping"}},
		{"repeated key", map[string]string{"rs.yaml": "readSideId: a\nhost: h\nport: 1\nhost: g\n"},
			[]string{`FILE: document 1: line 4: mapping key "host" already defined at line 2`}},
		{"syntax error", map[string]string{"rs.yaml": "readSideId: a\nhost: [h\n"},
			[]string{"COS_READ_SIDE_CONFIG: FILE: document 1: yaml: line"}},
		{"duplicate ids in a file", map[string]string{
			"rs.yaml": "readSideId: a\nhost: h\nport: 1\n---\nreadSideId: a\nhost: g\nport: 2\n"},
			[]string{`COS_READ_SIDE_CONFIG: FILE: document 2: readSideId: "a" is already defined in FILE, document 1`}},
		{"duplicate ids across files", map[string]string{
			"1.yaml": "readSideId: a\nhost: h\nport: 1\n",
			"2.yml":  "readSideId: b\nhost: h\nport: 1\n---\nreadSideId: a\nhost: h\nport: 1\n"},
			[]string{`2.yml: document 2: readSideId: "a" is already defined in FILE, document 1`}},
		{"errors in every file", map[string]string{
			"1.yaml": "readSideId: a\nhost: h\n",
			"2.yaml": "readSideId: b\nport: 1\n"},
			[]string{"FILE: document 1: port: required", "2.yaml: document 1: host: required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			var first string
			for name, content := range tt.files {
				path := writeFile(t, dir, name, content)
				if first == "" || path < first {
					first = path
				}
			}
			target := first
			if len(tt.files) > 1 {
				target = dir
			}
			c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + target})
			wants := make([]string, len(tt.wants))
			for i, w := range tt.wants {
				wants[i] = strings.ReplaceAll(w, "FILE", first)
			}
			wantErrors(t, c, err, wants...)
		})
	}
}

func TestReadSidesMissingPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + missing})
	wantErrors(t, c, err, "COS_READ_SIDE_CONFIG: ", missing, "no such file or directory")
}

func TestEnabledReadSides(t *testing.T) {
	a, b, off := rs("a", "h", 1), rs("b", "h", 2), rs("off", "h", 3)
	off.Enabled = false
	paused := rs("paused", "h", 4)
	paused.AutoStart = false
	tests := []struct {
		name    string
		enabled bool
		sides   []ReadSide
		want    []ReadSide
	}{
		{"read sides disabled", false, []ReadSide{a, b}, nil},
		{"none configured", true, nil, nil},
		{"all enabled", true, []ReadSide{a, b}, []ReadSide{a, b}},
		{"some disabled", true, []ReadSide{a, off, paused, b}, []ReadSide{a, paused, b}},
		{"all disabled", true, []ReadSide{off}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ReadSideEnabled, c.ReadSides = tt.enabled, tt.sides
			if got := c.EnabledReadSides(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}

	t.Run("from the environment", func(t *testing.T) {
		c, _, err := FromEnv([]string{
			"COS_READ_SIDE_ENABLED=true",
			"COS_READ_SIDE_CONFIG__HOST__a=h", "COS_READ_SIDE_CONFIG__PORT__a=1",
			"COS_READ_SIDE_CONFIG__HOST__off=h", "COS_READ_SIDE_CONFIG__PORT__off=3",
			"COS_READ_SIDE_CONFIG__ENABLED__off=false",
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.EnabledReadSides(), []ReadSide{a}; !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
	})
}

func TestReadSideValidate(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*ReadSide)
		wants []string // empty = valid
	}{
		{"valid", func(*ReadSide) {}, nil},
		{"all policies", func(r *ReadSide) { r.FailurePolicy = FailureReplayStop }, nil},
		{"zero value", func(r *ReadSide) { *r = ReadSide{} }, []string{
			`read side "": readSideId: "" is not a valid read side id`, `read side "": host: required`,
			`read side "": port: required`, `read side "": timeout: must be greater than 0, got 0s`,
			`read side "": maxInFlight: must be between 1 and 10000, got 0`,
		}},
		{"bad id", func(r *ReadSide) { r.ID = "a b" }, []string{`read side "a b": readSideId:`}},
		{"host with slash", func(r *ReadSide) { r.Host = "h/x" }, []string{`read side "a": host:`}},
		{"port range", func(r *ReadSide) { r.Port = 65536 }, []string{`read side "a": port: must be between 1 and 65535`}},
		{"negative port", func(r *ReadSide) { r.Port = -1 }, []string{`read side "a": port:`}},
		{"negative timeout", func(r *ReadSide) { r.Timeout = -time.Second }, []string{`read side "a": timeout:`}},
		{"unknown policy", func(r *ReadSide) { r.FailurePolicy = "RETRY" },
			[]string{`read side "a": failurePolicy: "RETRY" is not a failure policy`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rs("a", "h", 1)
			tt.mod(&r)
			err := r.Validate()
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

func TestConfigValidateReadSides(t *testing.T) {
	tests := []struct {
		name    string
		enabled bool
		sides   []ReadSide
		want    string // empty = valid
	}{
		{"enabled without read sides", true, nil, ""},
		{"valid", true, []ReadSide{rs("a", "h", 1), rs("b", "h", 1)}, ""},
		{"invalid read side", false, []ReadSide{rs("a", "", 1)}, `read side "a": host: required`},
		{"duplicate ids", true, []ReadSide{rs("a", "h", 1), rs("a", "g", 2)}, `read side "a": readSideId: defined more than once`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ReadSideEnabled, c.ReadSides = tt.enabled, tt.sides
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v does not contain %q", err, tt.want)
			}
		})
	}
	// FromEnv with COS_READ_SIDE_ENABLED and no read side is valid.
	c, _, err := FromEnv([]string{"COS_READ_SIDE_ENABLED=true"})
	if err != nil || c.ReadSides != nil || c.EnabledReadSides() != nil {
		t.Errorf("read sides %+v, error %v", c.ReadSides, err)
	}
}
