package charttest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"helm.sh/helm/v4/pkg/strvals"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// Paths, relative to this package's directory (go test runs in it).
const (
	chartDir    = "../helm/cosnats"
	examplesDir = "../helm/examples"
	repoRoot    = "../.."
)

const (
	releaseName = "cos"
	namespace   = "ledger"
)

// valuesFile is one of the chart's test values files in ci/.
func valuesFile(name string) string { return filepath.Join(chartDir, "ci", name+"-values.yaml") }

// testValuesFiles are the values files every render test runs with.
var testValuesFiles = []string{"minimal", "production", "everything-on", "hardened"}

// loadChart loads the chart directory as helm install would (honouring .helmignore).
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// readValues merges values files and then --set style assignments, later ones winning, as
// `helm template -f a -f b --set k=v` does.
func readValues(t testing.TB, files []string, sets ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		v, err := common.ReadValuesFile(f)
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		vals = mergeMaps(vals, v.AsMap())
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, vals); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	return vals
}

// mergeMaps merges b into a copy of a, recursing into maps; anything else in b replaces a's value.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// renderOpts says how to render: the values and, for the layout guard, a provider of cluster objects
// for `lookup`.
type renderOpts struct {
	vals      map[string]any
	upgrade   bool
	clientsOf engine.ClientProvider
}

// render renders the chart as `helm install` (or upgrade) would, schema validation included, and
// returns the rendered files by name (NOTES.txt among them).
func render(t testing.TB, c *chart.Chart, o renderOpts) (map[string]string, error) {
	t.Helper()
	top, err := chartutil.ToRenderValuesWithSchemaValidation(c, o.vals, releaseOptions(o.upgrade), nil, false)
	if err != nil {
		return nil, err
	}
	if o.clientsOf != nil {
		return engine.RenderWithClientProvider(c, top, o.clientsOf)
	}
	return renderTop(c, top)
}

func releaseOptions(upgrade bool) common.ReleaseOptions {
	return common.ReleaseOptions{Name: releaseName, Namespace: namespace, Revision: 1, IsInstall: !upgrade, IsUpgrade: upgrade}
}

// toRenderValuesNoSchema prepares values as `helm install --skip-schema-validation` does.
func toRenderValuesNoSchema(c *chart.Chart, vals map[string]any) (common.Values, error) {
	return chartutil.ToRenderValuesWithSchemaValidation(c, vals, releaseOptions(false), nil, true)
}

// renderTop renders prepared values. Strict: a template that reads a value that does not exist fails
// instead of printing nothing, which catches misspelt value paths.
func renderTop(c *chart.Chart, top common.Values) (map[string]string, error) {
	return engine.Engine{Strict: true}.Render(c, top)
}

// object is one rendered Kubernetes object: its decoded form and where it came from.
type object struct {
	source string // template file
	raw    []byte
	obj    runtime.Object
}

// decoder decodes YAML strictly into the Kubernetes API types and the Prometheus Operator's: an
// unknown or duplicate field is an error.
var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		panic(err)
	}
	if err := monitoringv1.AddToScheme(scheme); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// docSeparator splits a rendered file into its YAML documents.
var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeAll strictly decodes every object of the rendered files, failing the test on the first
// error. Files are visited in name order so failures are reproducible.
func decodeAll(t testing.TB, files map[string]string) []object {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var objs []object
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // NOTES.txt and the helpers render no objects
		}
		for _, doc := range docSeparator.Split(files[name], -1) {
			if isBlankYAML(doc) {
				continue
			}
			obj, _, err := decoder.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s: strict decoding failed: %v\n%s", name, err, doc)
			}
			objs = append(objs, object{source: name, raw: []byte(doc), obj: obj})
		}
	}
	return objs
}

// isBlankYAML reports whether a document holds only whitespace and comments.
func isBlankYAML(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		l := strings.TrimSpace(line)
		if l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// find returns the objects of type T, and fails when there are not exactly want of them (want < 0:
// any number).
func find[T runtime.Object](t testing.TB, objs []object, want int) []T {
	t.Helper()
	var out []T
	for _, o := range objs {
		if v, ok := o.obj.(T); ok {
			out = append(out, v)
		}
	}
	if want >= 0 && len(out) != want {
		var zero T
		t.Fatalf("want %d objects of type %T, got %d", want, zero, len(out))
	}
	return out
}

// renderFile renders the chart with one of the ci/ values files and decodes every object.
func renderFile(t testing.TB, c *chart.Chart, name string, sets ...string) (map[string]string, []object) {
	t.Helper()
	files, err := render(t, c, renderOpts{vals: readValues(t, []string{valuesFile(name)}, sets...)})
	if err != nil {
		t.Fatalf("render with %s values: %v", name, err)
	}
	return files, decodeAll(t, files)
}

// mustYAML marshals v for failure messages.
func mustYAML(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

// readFile reads a file of the repository, failing the test when it cannot.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// contains reports whether b holds s (for rendered text).
func contains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }
