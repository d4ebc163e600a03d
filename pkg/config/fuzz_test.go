package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzFromEnv parses arbitrary environments: a configuration or errors naming variables, never a panic.
func FuzzFromEnv(f *testing.F) {
	f.Add("COS_PORT=9000\nCOS_NUM_SHARDS=16\nCOS_READ_SIDE_CONFIG__HOST__a=h\nCOS_READ_SIDE_CONFIG__PORT__a=1")
	f.Add("COS_READ_SIDE_CONFIG__HOST=x\nCOS_INTAKE_MAX_AGE=-1\nCOS_WRITE_SIDE_PROPAGATED_HEADERS=A,b,,c")
	f.Add("COS_COMMAND_HANDLER_TIMEOUT=99999999999999999999\nLOG_LEVEL=warning\nCOS_NATS_URL= ")
	f.Fuzz(func(t *testing.T, env string) {
		c, _, err := FromEnv(strings.Split(env, "\n"))
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("FromEnv accepted a configuration that does not validate: %v", verr)
			}
		}
	})
}

// FuzzReadSideFile parses arbitrary read-side YAML files: read sides or errors, never a panic.
func FuzzReadSideFile(f *testing.F) {
	f.Add("readSideId: a\nhost: h\nport: 1\n---\nreadSideId: b\nhost: h\nport: 2\nfailurePolicy: REPLAY_SKIP\n")
	f.Add("readSideId: [\n")
	f.Add("readSideId: a\nport: 99999\nunknown: 1\ntimeout: -5\n")
	f.Fuzz(func(t *testing.T, yaml string) {
		path := filepath.Join(t.TempDir(), "rs.yaml")
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := FromEnv([]string{"COS_READ_SIDE_CONFIG=" + path})
		if err == nil {
			for _, rs := range c.ReadSides {
				if rs.Validate() != nil {
					t.Fatalf("accepted read side %+v does not validate", rs)
				}
			}
		}
	})
}
