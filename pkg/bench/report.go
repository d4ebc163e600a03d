package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is a whole run.
type Report struct {
	Started time.Time `json:"started"`
	Command string    `json:"command"` // how it was invoked
	Mode    string    `json:"mode"`    // e.g. "embedded single process, R1, sync_interval default"
	Machine Machine   `json:"machine"`
	Results []Result  `json:"results"`
	Notes   []string  `json:"notes,omitempty"`
}

// WriteJSON writes the report as indented JSON (HTML characters not escaped).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// WriteMarkdown writes the report as Markdown: a heading, a paragraph on the machine, mode and
// command, one table with a row per result (Scenario | Variant | ops/s | p50 ms | p90 ms | p99 ms |
// p99.9 ms | CPU µs/op | errors | notes, where notes is the result's Note followed by its Extra as
// sorted key=value pairs), then the report's Notes as a bullet list.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")

	var para []string
	if !r.Started.IsZero() {
		para = append(para, "Started "+r.Started.UTC().Format(time.RFC3339)+".")
	}
	m := r.Machine
	mach := fmt.Sprintf("Machine: %s, %d cores", mdCPU(m.CPU), m.Cores)
	if m.MemoryGiB > 0 {
		mach += fmt.Sprintf(", %.1f GiB RAM", m.MemoryGiB)
	}
	for _, s := range []string{m.OS, mdKernel(m.Kernel), m.GoVersion} {
		if s != "" {
			mach += ", " + s
		}
	}
	para = append(para, mach+".")
	if r.Mode != "" {
		para = append(para, "Mode: "+r.Mode+".")
	}
	if r.Command != "" {
		para = append(para, "Command: "+mdCode(r.Command)+".")
	}
	b.WriteString(strings.Join(para, "\n"))
	b.WriteString("\n\n")

	b.WriteString("| Scenario | Variant | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/op | errors | notes |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for i := range r.Results {
		res := &r.Results[i]
		cells := []string{
			mdCell(res.Scenario),
			mdCell(res.Variant),
			strconv.FormatFloat(res.OpsPerSec, 'f', 0, 64),
			fmtCompact(res.P50Ms),
			fmtCompact(res.P90Ms),
			fmtCompact(res.P99Ms),
			fmtCompact(res.P999Ms),
			fmtCompact(res.CPUPerOpUs),
			strconv.FormatInt(res.Errors, 10),
			mdCell(resultNotes(res)),
		}
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}

	if len(r.Notes) > 0 {
		b.WriteString("\n")
		for _, n := range r.Notes {
			b.WriteString("- " + strings.ReplaceAll(strings.TrimSpace(n), "\n", "\n  ") + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// resultNotes is the notes cell of a result: its Note, then its Extra as sorted key=value pairs.
func resultNotes(res *Result) string {
	var parts []string
	if res.Note != "" {
		parts = append(parts, res.Note)
	}
	for _, k := range slices.Sorted(maps.Keys(res.Extra)) {
		parts = append(parts, k+"="+fmtCompact(res.Extra[k]))
	}
	return strings.Join(parts, "; ")
}

// fmtCompact formats v with about three significant digits and no exponent, trailing zeros dropped:
// 0.0123 → "0.0123", 0.5 → "0.5", 1.234 → "1.23", 12.34 → "12.3", 2500 → "2500".
func fmtCompact(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'g', -1, 64)
	}
	if v == 0 {
		return "0"
	}
	dec := min(max(2-int(math.Floor(math.Log10(math.Abs(v)))), 0), 6)
	s := strconv.FormatFloat(v, 'f', dec, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// mdCell makes text safe inside a Markdown table cell.
func mdCell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.Join(strings.Fields(s), " ")
}

// mdCode renders s as inline code, fenced with enough backticks for what s contains.
func mdCode(s string) string {
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if len(fence) > 1 {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

func mdCPU(s string) string {
	if s == "" {
		return "unknown CPU"
	}
	return s
}

func mdKernel(k string) string {
	if k == "" {
		return ""
	}
	return "kernel " + k
}
