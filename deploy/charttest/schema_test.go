package charttest

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
)

// TestSchemaRejects: values the schema (or, where a schema cannot say it, the chart's own checks)
// must refuse, each with a message that names the offending value. Each case starts from the
// minimal values, which render.
func TestSchemaRejects(t *testing.T) {
	c := loadChart(t)
	cases := []struct {
		name string
		sets []string
		// extra is merged over the values after the sets (for lists and maps --set cannot express).
		extra map[string]any
		want  []string // substrings of the error
	}{
		{name: "missing nats.url", sets: []string{"nats.url="}, want: []string{"/nats"}},
		{name: "nats.url with spaces", sets: []string{"nats.url=nats://a:4222 nats://b:4222"}, want: []string{"/nats/url"}},
		{name: "gateway replicas 0", sets: []string{"gateway.replicaCount=0"}, want: []string{"/gateway/replicaCount", "minimum"}},
		{name: "worker replicas -1", sets: []string{"worker.replicaCount=-1"}, want: []string{"/worker/replicaCount"}},
		{name: "projector replicas 0", sets: []string{"projector.replicaCount=0"}, want: []string{"/projector/replicaCount"}},
		{name: "bad failure policy", sets: []string{"readSides.bank.host=rs", "readSides.bank.port=50052", "readSides.bank.failurePolicy=RETRY_FOREVER"}, want: []string{"/readSides/bank/failurePolicy"}},
		{name: "read side without port", sets: []string{"readSides.bank.host=rs"}, want: []string{"/readSides/bank", "port"}},
		{name: "read side id with a dot", sets: []string{"readSides.bank\\.v2.host=rs", "readSides.bank\\.v2.port=1"}, want: []string{"bank.v2", "does not match pattern"}},
		{name: "read side unknown key", sets: []string{"readSides.bank.host=rs", "readSides.bank.port=1", "readSides.bank.timeoutMs=5"}, want: []string{"/readSides/bank", "timeoutMs"}},
		{name: "read side maxInFlight too high", sets: []string{"readSides.bank.host=rs", "readSides.bank.port=1", "readSides.bank.maxInFlight=10001"}, want: []string{"/readSides/bank/maxInFlight"}},
		{name: "unknown top-level key", sets: []string{"replicaCount=3"}, want: []string{"replicaCount"}},
		{name: "unknown nested key", sets: []string{"gateway.replicas=3"}, want: []string{"/gateway", "replicas"}},
		{name: "numShards 0", sets: []string{"layout.numShards=0"}, want: []string{"/layout/numShards"}},
		{name: "numShards over 1024", sets: []string{"layout.numShards=2048"}, want: []string{"/layout/numShards"}},
		{name: "prefix with a dot", sets: []string{"layout.natsPrefix=COS.X"}, want: []string{"/layout/natsPrefix"}},
		{name: "nats replicas 7", sets: []string{"nats.replicas=7"}, want: []string{"/nats/replicas"}},
		{name: "worker without write handler", sets: []string{"writeSide.host="}, want: []string{"/writeSide/host"}},
		{name: "log level", sets: []string{"config.logLevel=LOUD"}, want: []string{"/config/logLevel"}},
		{name: "grace margin 0", sets: []string{"config.terminationGraceMarginSeconds=0"}, want: []string{"/config/terminationGraceMarginSeconds"}},
		{name: "pdb maxUnavailable", sets: []string{"gateway.pdb.maxUnavailable=some"}, want: []string{"/gateway/pdb/maxUnavailable"}},
		{name: "tracing protocol", sets: []string{"tracing.protocol=thrift"}, want: []string{"/tracing/protocol"}},
		{name: "worker max pending below 1 MiB", sets: []string{"worker.maxPendingBytes=1000"}, want: []string{"/worker/maxPendingBytes"}},
		{name: "image digest", sets: []string{"image.digest=latest"}, want: []string{"/image/digest"}},
		{name: "hostPath volume", extra: map[string]any{"extraVolumes": []any{map[string]any{"name": "host", "hostPath": map[string]any{"path": "/"}}}}, want: []string{"/extraVolumes/0", "hostPath"}},
		{name: "env without name", extra: map[string]any{"extraEnv": []any{map[string]any{"value": "x"}}}, want: []string{"/extraEnv/0", "name"}},
		{name: "toleration effect", extra: map[string]any{"worker": map[string]any{"tolerations": []any{map[string]any{"key": "k", "effect": "Sometimes"}}}}, want: []string{"/worker/tolerations/0/effect"}},
		{name: "gateway TLS Secret name", sets: []string{"gateway.tls.secretName=Gateway_TLS"}, want: []string{"/gateway/tls/secretName"}},
		{name: "admin address without port", sets: []string{"gateway.admin.address=127.0.0.1"}, want: []string{"/gateway/admin/address"}},
		{name: "admin port 70000", sets: []string{"gateway.admin.address=0.0.0.0:70000"}, want: []string{"/gateway/admin/address"}},
		{name: "role credentials unknown key", sets: []string{"worker.nats.credentialsSecret.password=x"}, want: []string{"/worker/nats/credentialsSecret", "password"}},
		{name: "role credentials without user key", sets: []string{"projector.nats.credentialsSecret.name=cos-nats-projector", "projector.nats.credentialsSecret.userKey="}, want: []string{"/projector/nats/credentialsSecret/userKey"}},
		{name: "NATS CA key with a slash", sets: []string{"nats.tls.caSecretName=ca", "nats.tls.caKey=a/b"}, want: []string{"/nats/tls/caKey"}},
		{name: "write side TLS unknown key", sets: []string{"writeSide.tls.insecure=true"}, want: []string{"/writeSide/tls", "insecure"}},
		{name: "read side TLS unknown key", sets: []string{"readSides.bank.host=rs", "readSides.bank.port=1", "readSides.bank.tls.ca=x"}, want: []string{"/readSides/bank/tls", "ca"}},
		// Beyond the schema: checks of the templates.
		{name: "mTLS without TLS", sets: []string{"gateway.tls.clientCASecretName=clients-ca"}, want: []string{"gateway.tls.clientCASecretName (mTLS) needs gateway.tls.secretName"}},
		{name: "admin Service without address", sets: []string{"gateway.admin.service.enabled=true"}, want: []string{"gateway.admin.service.enabled needs gateway.admin.address"}},
		{name: "admin Service on loopback", sets: []string{"gateway.admin.address=127.0.0.1:9001", "gateway.admin.service.enabled=true"}, want: []string{"listens on loopback"}},
		{name: "admin port is the gRPC port", sets: []string{"gateway.admin.address=0.0.0.0:9000"}, want: []string{"must use a port other than gateway.port"}},
		{name: "proto validation without lists", sets: []string{"writeSide.protoValidation=true"}, want: []string{"writeSide.eventProtos and writeSide.stateProtos"}},
		{name: "autoscaling without cpu request", sets: []string{"worker.autoscaling.enabled=true", "worker.resources.requests.cpu=null"}, want: []string{"worker.resources.requests.cpu is required"}},
		{name: "autoscaling max below min", sets: []string{"gateway.autoscaling.enabled=true", "gateway.autoscaling.minReplicas=5", "gateway.autoscaling.maxReplicas=2"}, want: []string{"gateway.autoscaling.maxReplicas"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vals := readValues(t, []string{valuesFile("minimal")}, tc.sets...)
			if tc.extra != nil {
				vals = mergeMaps(vals, tc.extra)
			}
			_, err := render(t, c, renderOpts{vals: vals})
			if err == nil {
				t.Fatalf("rendered; want an error mentioning %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestTemplateChecksWithoutSchema: the chart's own checks catch what a user skipping schema validation
// (helm --skip-schema-validation) would otherwise install: no NATS URL would make every process start
// an embedded NATS server.
func TestTemplateChecksWithoutSchema(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct {
		set, want string
	}{
		{"nats.url=", "nats.url is required"},
		{"writeSide.host=", "writeSide.host is required"},
	} {
		vals := readValues(t, []string{valuesFile("minimal")}, tc.set)
		top, err := toRenderValuesNoSchema(c, vals)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := renderTop(c, top); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--set %s without the schema: got %v, want an error with %q", tc.set, err, tc.want)
		}
	}
}

// TestValuesDocumented: every value of values.yaml is in the chart README's table and described by
// the schema, and every object of the schema says what it does with unknown keys (so none slips by).
func TestValuesDocumented(t *testing.T) {
	vals, err := common.ReadValuesFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	leafPaths("", vals.AsMap(), &paths)
	sort.Strings(paths)
	if len(paths) < 100 {
		t.Fatalf("found only %d values; the walk is broken", len(paths))
	}

	readme := string(readFile(t, filepath.Join(chartDir, "README.md")))
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(readme, -1) {
		documented[m[1]] = true
	}
	var schema map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(chartDir, "values.schema.json")), &schema); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if !documented[p] {
			t.Errorf("value %s is not in the README's table", p)
		}
		if !schemaHas(schema, schema, strings.Split(p, ".")) {
			t.Errorf("value %s is not described by values.schema.json", p)
		}
	}
	// And the table documents nothing that does not exist.
	for p := range documented {
		if !inValues(vals.AsMap(), strings.Split(p, ".")) {
			t.Errorf("the README documents %s, which values.yaml does not have", p)
		}
	}
	checkClosed(t, schema, schema, "#")
}

// leafPaths collects the dotted paths of values.yaml's leaves: scalars, lists, and empty maps (maps
// the user fills, like readSides or podLabels).
func leafPaths(prefix string, m map[string]any, out *[]string) {
	for k, v := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := v.(map[string]any); ok && len(sub) > 0 && !isUserMap(p) {
			leafPaths(p, sub, out)
			continue
		}
		*out = append(*out, p)
	}
}

// isUserMap reports whether the map at p is free-form (its keys are the user's, not the chart's).
func isUserMap(p string) bool {
	for _, suffix := range []string{"resources", "livenessProbe", "readinessProbe", "podSecurityContext", "securityContext"} {
		if p == suffix || strings.HasSuffix(p, "."+suffix) {
			return true
		}
	}
	return false
}

func inValues(m map[string]any, path []string) bool {
	v, ok := m[path[0]]
	if !ok {
		return false
	}
	if len(path) == 1 {
		return true
	}
	sub, ok := v.(map[string]any)
	return ok && inValues(sub, path[1:])
}

// schemaHas reports whether the schema s (within the document root) describes the property path.
func schemaHas(root, s map[string]any, path []string) bool {
	s = resolve(root, s)
	if len(path) == 0 {
		return true
	}
	props, _ := s["properties"].(map[string]any)
	sub, ok := props[path[0]].(map[string]any)
	if !ok {
		return false
	}
	return schemaHas(root, sub, path[1:])
}

// resolve follows a $ref (and a lone allOf wrapping one) within the document.
func resolve(root, s map[string]any) map[string]any {
	for {
		if all, ok := s["allOf"].([]any); ok && len(all) == 1 {
			s = all[0].(map[string]any)
			continue
		}
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		def, _ := root["definitions"].(map[string]any)
		s = def[strings.TrimPrefix(ref, "#/definitions/")].(map[string]any)
	}
}

// checkClosed: each object schema with properties sets additionalProperties (false, or a schema for
// maps keyed by the user), so an unknown key is refused everywhere the chart names the keys.
func checkClosed(t *testing.T, root, s map[string]any, where string) {
	t.Helper()
	if _, ok := s["properties"]; ok {
		if _, ok := s["additionalProperties"]; !ok {
			t.Errorf("schema %s: properties without additionalProperties", where)
		}
	}
	for _, key := range []string{"properties", "definitions"} {
		m, _ := s[key].(map[string]any)
		for name, sub := range m {
			if sub, ok := sub.(map[string]any); ok {
				checkClosed(t, root, sub, where+"/"+key+"/"+name)
			}
		}
	}
	for _, key := range []string{"items", "additionalProperties"} {
		if sub, ok := s[key].(map[string]any); ok {
			checkClosed(t, root, sub, where+"/"+key)
		}
	}
}
