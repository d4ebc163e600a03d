package observability

import (
	"embed"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The files are embedded so that MetricNames works from any package's test, whatever its working
// directory.
//
//go:embed alerts.yml dashboard.json
var files embed.FS

// MetricNames returns the cos_ metric names the alert rules and the dashboard query, sorted and
// without duplicates. Histogram series are named by their family (cos_command_duration_seconds, not
// cos_command_duration_seconds_bucket), as a scrape's metadata names them. Other names the kit uses
// (up, go_*, process_*) are not ours and not listed.
func MetricNames() ([]string, error) {
	exprs, err := queries()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricsIn(e) {
			seen[n] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// queries returns every PromQL text of the kit: the rules' expressions and the dashboard's panel and
// variable queries.
func queries() ([]string, error) {
	rules, err := loadRules()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, r.Expr)
		}
	}
	dash, err := loadDashboard()
	if err != nil {
		return nil, err
	}
	return append(out, dashboardQueries(dash)...), nil
}

// ruleFile is the part of a Prometheus rule file the checks need.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func loadRules() (*ruleFile, error) {
	b, err := files.ReadFile("alerts.yml")
	if err != nil {
		return nil, err
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("alerts.yml: %w", err)
	}
	return &rf, nil
}

// loadDashboard decodes dashboard.json without a schema: Grafana's model is large and the checks
// only walk it.
func loadDashboard() (map[string]any, error) {
	b, err := files.ReadFile("dashboard.json")
	if err != nil {
		return nil, err
	}
	var d map[string]any
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dashboard.json: %w", err)
	}
	return d, nil
}

// dashboardQueries collects the PromQL of a dashboard: targets' expr, and variables' query and
// definition (a variable's query is a string or an object holding one). Walking the whole document
// also finds panels nested in collapsed rows.
func dashboardQueries(v any) []string {
	var out []string
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			switch s := val.(type) {
			case string:
				if k == "expr" || k == "definition" || k == "query" {
					out = append(out, s)
				}
			default:
				out = append(out, dashboardQueries(val)...)
			}
		}
	case []any:
		for _, e := range x {
			out = append(out, dashboardQueries(e)...)
		}
	}
	return out
}

var (
	// PromQL strings hold label values and durations, never metric names; dropping them first keeps
	// a matcher like job=~"cos_.*" from passing for a metric.
	promqlString = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	// A cos_ identifier not preceded by another identifier character (Go's regexp has no lookbehind).
	cosName = regexp.MustCompile(`(?:^|[^a-zA-Z0-9_:])(cos_[a-zA-Z0-9_:]*)`)
)

// metricsIn returns the cos_ metric families an expression reads.
func metricsIn(expr string) []string {
	var out []string
	for _, m := range cosName.FindAllStringSubmatch(promqlString.ReplaceAllString(expr, `""`), -1) {
		out = append(out, family(m[1]))
	}
	return out
}

// family strips the series suffixes of a classic histogram (or summary) from a name.
func family(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if s, ok := strings.CutSuffix(name, suffix); ok {
			return s
		}
	}
	return name
}
