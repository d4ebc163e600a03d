package observability

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// documented are the metrics the README documents (issue 10), with each label's values; nil values
// mean any value (read side ids, shard numbers, versions). A rule or a panel that queries anything
// else would stay silent or empty forever. A test that scrapes a running system checks the other
// direction: that the processes export all of them.
var documented = map[string]map[string][]string{
	"cos_commands_total":             {"outcome": {"ok", "handler_error", "invalid", "aborted", "unavailable", "unknown", "replayed"}},
	"cos_command_duration_seconds":   {},
	"cos_handler_duration_seconds":   {"method": {"HandleCommand", "HandleEvent", "HandleReadSide"}},
	"cos_append_duration_seconds":    {},
	"cos_append_conflicts_total":     {},
	"cos_state_cache_requests_total": {"result": {"hit", "miss"}},
	"cos_worker_inflight_commands":   {},
	"cos_gateway_workers":            {},
	"cos_readside_events_total":      {"read_side": nil, "outcome": {"ok", "failed", "skipped"}},
	"cos_readside_lag_events":        {"read_side": nil, "shard": nil},
	"cos_readside_lag_seconds":       {"read_side": nil},
	"cos_readside_shard_state":       {"read_side": nil, "shard": nil, "state": {"running", "paused", "stopped", "failing"}},
	"cos_nats_connected":             {},
	"cos_intake_commands_total":      {"outcome": {"ok", "replayed", "rejected"}},
	"cos_intake_pending_commands":    {},
	"cos_build_info":                 {"version": nil, "revision": nil},
}

// Labels every series may carry without the process setting them: Prometheus's target labels, the
// role of the scrape configuration, and the namespace of a Kubernetes target.
var targetLabels = []string{"job", "instance", "role", "namespace"}

func TestMetricNamesAreDocumented(t *testing.T) {
	names, err := MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("MetricNames found no cos_ metric in the rules and the dashboard")
	}
	for _, n := range names {
		if _, ok := documented[n]; !ok {
			t.Errorf("the kit queries %s, which is not a documented metric", n)
		}
	}
	// The dashboard is where an operator looks first: every metric should have a panel.
	dash, err := loadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	onDashboard := map[string]bool{}
	for _, q := range dashboardQueries(dash) {
		for _, n := range metricsIn(q) {
			onDashboard[n] = true
		}
	}
	for n := range documented {
		if !onDashboard[n] {
			t.Errorf("no dashboard panel shows %s", n)
		}
	}
}

func TestMetricsIn(t *testing.T) {
	got := metricsIn(`sum(rate(cos_command_duration_seconds_bucket{job=~"cos_fake_.*"}[5m])) / ` +
		`sum(rate(cos_commands_total[5m])) and xcos_not_ours and cos_readside_lag_seconds_count`)
	want := []string{"cos_command_duration_seconds", "cos_commands_total", "cos_readside_lag_seconds"}
	if !slices.Equal(got, want) {
		t.Errorf("metricsIn = %v, want %v", got, want)
	}
}

var (
	// A selector of a cos_ metric: its name and the text between the braces.
	selector = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])(cos_[a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
)

// TestLabelValuesAreDocumented catches a label or value misspelt in a selector (outcome="unavailble"):
// PromQL accepts it and the alert never fires.
func TestLabelValuesAreDocumented(t *testing.T) {
	exprs, err := queries()
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range exprs {
		for _, sel := range selector.FindAllStringSubmatch(e, -1) {
			name, labels := sel[1], documented[family(sel[1])]
			for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
				label, op, value := m[1], m[2], m[3]
				if slices.Contains(targetLabels, label) || (label == "le" && name != family(name)) {
					continue
				}
				values, ok := labels[label]
				if !ok {
					t.Errorf("%s has no label %q (in %q)", name, label, e)
					continue
				}
				if values == nil {
					continue
				}
				alternatives := []string{value}
				if op == "=~" || op == "!~" {
					alternatives = strings.Split(value, "|")
				}
				for _, v := range alternatives {
					checked++
					if !slices.Contains(values, v) {
						t.Errorf("%s{%s}: %q is not one of %v (in %q)", name, label, v, values, e)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Error("no label value checked: is the selector pattern still right?")
	}
}

func TestAlertRulesAreComplete(t *testing.T) {
	rf, err := loadRules()
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical (pages) or warning", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s (%s): no %s annotation", r.Alert, r.Labels["severity"], a)
				}
			}
		}
	}
	if alerts == 0 {
		t.Fatal("alerts.yml has no alert")
	}
}

// testFile is the part of a promtool test file the coverage check needs.
type testFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name  string `yaml:"name"`
		Cases []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels map[string]string `yaml:"exp_labels"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertsAreUnitTested checks that alerts_test.yml makes every alert (each severity of it) fire
// and also has a case where it stays quiet; promtool then checks that the cases hold.
func TestAlertsAreUnitTested(t *testing.T) {
	rf, err := loadRules()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var tf testFile
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatalf("alerts_test.yml: %v", err)
	}
	if !slices.Equal(tf.RuleFiles, []string{"alerts.yml"}) {
		t.Errorf("alerts_test.yml tests rule files %v, want [alerts.yml]", tf.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, c := range tc.Cases {
			if len(c.ExpAlerts) == 0 {
				quiet[c.Alertname] = true
			}
			for _, a := range c.ExpAlerts {
				fires[c.Alertname+"/"+a.ExpLabels["severity"]] = true
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !fires[r.Alert+"/"+r.Labels["severity"]] {
				t.Errorf("alerts_test.yml never expects %s (%s) to fire", r.Alert, r.Labels["severity"])
			}
			if !quiet[r.Alert] {
				t.Errorf("alerts_test.yml has no case where %s stays quiet", r.Alert)
			}
		}
	}
}

func TestDashboard(t *testing.T) {
	d, err := loadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := d["schemaVersion"].(float64); v < 39 {
		t.Errorf("schemaVersion %v, want at least 39", d["schemaVersion"])
	}
	if d["uid"] == "" || d["title"] == "" {
		t.Error("the dashboard needs a uid and a title")
	}

	vars := map[string]map[string]any{}
	for _, v := range list(obj(d, "templating"), "list") {
		vars[str(v, "name")] = v
	}
	if ds := vars["datasource"]; ds == nil || str(ds, "type") != "datasource" || str(ds, "query") != "prometheus" {
		t.Errorf("want a variable datasource of type datasource over prometheus, got %v", ds)
	}
	for _, name := range []string{"job", "instance", "read_side"} {
		v := vars[name]
		if v == nil {
			t.Errorf("no variable %s", name)
			continue
		}
		if uid := str(obj(v, "datasource"), "uid"); uid != "${datasource}" {
			t.Errorf("variable %s: datasource %q, want ${datasource}", name, uid)
		}
	}

	ids := map[float64]bool{}
	titles := map[string]bool{}
	for _, p := range panels(d) {
		title := str(p, "title")
		id, _ := p["id"].(float64)
		if ids[id] {
			t.Errorf("panel %q: id %v used twice", title, id)
		}
		ids[id] = true
		if titles[title] {
			t.Errorf("two panels are titled %q", title)
		}
		titles[title] = true
		gp := obj(p, "gridPos")
		x, _ := gp["x"].(float64)
		w, _ := gp["w"].(float64)
		h, _ := gp["h"].(float64)
		if w <= 0 || h <= 0 || x+w > 24 {
			t.Errorf("panel %q: gridPos %v does not fit the 24-column grid", title, gp)
		}
		if str(p, "type") == "row" {
			continue
		}
		// A fixed datasource would break the dashboard on any Grafana whose Prometheus has another uid.
		if ds := obj(p, "datasource"); str(ds, "type") != "prometheus" || str(ds, "uid") != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want the ${datasource} variable", title, ds)
		}
		targets := list(p, "targets")
		if len(targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
		for _, tg := range targets {
			if uid := str(obj(tg, "datasource"), "uid"); uid != "${datasource}" {
				t.Errorf("panel %q, query %s: datasource %q, want ${datasource}", title, str(tg, "refId"), uid)
			}
			expr := str(tg, "expr")
			if expr == "" {
				t.Errorf("panel %q, query %s: no expr", title, str(tg, "refId"))
			}
			// Every query follows the variables, or picking a job or a read side would be a lie.
			if !strings.Contains(expr, `job=~"$job"`) || !strings.Contains(expr, `instance=~"$instance"`) {
				t.Errorf("panel %q: query %q ignores $job or $instance", title, expr)
			}
			if strings.Contains(expr, "cos_readside_") && !strings.Contains(expr, `read_side=~"$read_side"`) {
				t.Errorf("panel %q: query %q ignores $read_side", title, expr)
			}
		}
	}
	if len(titles) == 0 {
		t.Fatal("the dashboard has no panel")
	}
}

// panels returns the dashboard's panels, including those inside collapsed rows.
func panels(d map[string]any) []map[string]any {
	var out []map[string]any
	for _, p := range list(d, "panels") {
		out = append(out, p)
		out = append(out, list(p, "panels")...)
	}
	return out
}

// TestComposeFiles checks what the compose observability profile relies on, so a renamed file, job or
// path fails here rather than as an empty Grafana.
func TestComposeFiles(t *testing.T) {
	var prom struct {
		Global struct {
			ScrapeInterval string `yaml:"scrape_interval"`
		} `yaml:"global"`
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string          `yaml:"targets"`
				Labels  map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "prometheus.yml", &prom)
	if prom.Global.ScrapeInterval != "5s" {
		t.Errorf("prometheus.yml: scrape_interval %q, want 5s", prom.Global.ScrapeInterval)
	}
	if !slices.Equal(prom.RuleFiles, []string{"/etc/prometheus/alerts.yml"}) {
		t.Errorf("prometheus.yml: rule_files %v, want [/etc/prometheus/alerts.yml]", prom.RuleFiles)
	}
	var targets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("prometheus.yml: job %s scrapes %q, want /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			// The alerts select workers by role; the job name is only a name.
			if st.Labels["role"] != sc.JobName {
				t.Errorf("prometheus.yml: job %s labels its targets role=%q", sc.JobName, st.Labels["role"])
			}
			for _, tg := range st.Targets {
				if !strings.HasSuffix(tg, ":9102") {
					t.Errorf("prometheus.yml: target %s is not on the metrics port 9102", tg)
				}
				targets = append(targets, tg)
			}
		}
	}
	slices.Sort(targets)
	want := []string{"gateway:9102", "projector-1:9102", "projector-2:9102", "worker-1:9102", "worker-2:9102"}
	if !slices.Equal(targets, want) {
		t.Errorf("prometheus.yml scrapes %v, want %v", targets, want)
	}

	var ds struct {
		Datasources []struct {
			Type string `yaml:"type"`
			UID  string `yaml:"uid"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].UID != "prometheus" ||
		ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana datasource: %+v, want one prometheus, uid prometheus, at http://prometheus:9090", ds.Datasources)
	}

	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/dashboards.yml", &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || dp.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("grafana dashboard providers: %+v, want one file provider of /var/lib/grafana/dashboards", dp.Providers)
	}

	var otel struct {
		Receivers struct {
			OTLP struct {
				Protocols map[string]struct {
					Endpoint string `yaml:"endpoint"`
				} `yaml:"protocols"`
			} `yaml:"otlp"`
		} `yaml:"receivers"`
		Service struct {
			Pipelines map[string]struct {
				Receivers []string `yaml:"receivers"`
				Exporters []string `yaml:"exporters"`
			} `yaml:"pipelines"`
		} `yaml:"service"`
	}
	readYAML(t, "otel-collector.yaml", &otel)
	for proto, ep := range map[string]string{"grpc": "0.0.0.0:4317", "http": "0.0.0.0:4318"} {
		if got := otel.Receivers.OTLP.Protocols[proto].Endpoint; got != ep {
			t.Errorf("otel-collector.yaml: OTLP %s on %q, want %s", proto, got, ep)
		}
	}
	if p := otel.Service.Pipelines["traces"]; !slices.Contains(p.Receivers, "otlp") || !slices.Contains(p.Exporters, "debug") {
		t.Errorf("otel-collector.yaml: traces pipeline %+v, want otlp in and debug out", p)
	}
}

// TestComposeMounts checks that every file docker-compose.yml mounts from this directory exists.
func TestComposeMounts(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	const here = "./deploy/observability/"
	mounts := 0
	for svc, s := range compose.Services {
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			rel, ok := strings.CutPrefix(src, here)
			if !ok {
				continue
			}
			mounts++
			if _, err := os.Stat(filepath.FromSlash(rel)); err != nil {
				t.Errorf("docker-compose.yml: service %s mounts %s: %v", svc, src, err)
			}
		}
	}
	if mounts == 0 {
		t.Error("docker-compose.yml mounts nothing from deploy/observability: the observability profile is not wired")
	}
}

// TestHelmChartCopy keeps the Helm chart's copy of the rules (embedded in its PrometheusRule) the
// same as alerts.yml.
func TestHelmChartCopy(t *testing.T) {
	copyPath := filepath.Join("..", "helm", "cosnats", "files", "alerts.yml")
	chart, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := files.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(chart, ours) {
		t.Errorf("%s differs from alerts.yml: copy alerts.yml over it", copyPath)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Accessors for the untyped dashboard document: a missing or mistyped field reads as empty, and the
// checks report what they expected.

func obj(v any, key string) map[string]any {
	m, _ := v.(map[string]any)
	o, _ := m[key].(map[string]any)
	return o
}

func str(v any, key string) string {
	m, _ := v.(map[string]any)
	s, _ := m[key].(string)
	return s
}

// list returns v[key] as a list of objects.
func list(v any, key string) []map[string]any {
	m, _ := v.(map[string]any)
	var out []map[string]any
	items, _ := m[key].([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}
