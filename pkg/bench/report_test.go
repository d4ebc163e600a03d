package bench

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	return &Report{
		Started: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
		Command: "cosbench -duration 10s -out results > log",
		Mode:    "embedded single process, R1, sync_interval default",
		Machine: Machine{CPU: "Test CPU @ 3GHz", Cores: 8, MemoryGiB: 31.3, OS: "linux/amd64", Kernel: "6.1.0", GoVersion: "go1.26"},
		Results: []Result{
			{
				Scenario: "ProcessCommand, many entities", Variant: "c=64", Ops: 123456, Errors: 3, FirstError: "deadline exceeded",
				Seconds: 10.0012, OpsPerSec: 12345.678, P50Ms: 1.23456, P90Ms: 2.5, P99Ms: 12.3456, P999Ms: 123.456, MaxMs: 250,
				CPUPerOpUs: 87.654, Extra: map[string]float64{"ratio_to_floor": 0.81234, "conflict_retries": 12},
			},
			{
				Scenario: "GetState | pipes", Variant: "open loop 2500/s", Ops: 25000, Seconds: 10, OpsPerSec: 2500,
				P50Ms: 0.0456, P90Ms: 0.5, P99Ms: 0.999, P999Ms: 1, MaxMs: 3, Note: "while replaying",
				Extra: map[string]float64{"target_rate": 2500, "late_starts": 0},
			},
		},
		Notes: []string{"first note", "second note"},
	}
}

func TestWriteMarkdown(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	md := buf.String()
	for _, want := range []string{
		"# ",
		"| Scenario | Variant | ops/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU µs/op | errors | notes |",
		"Test CPU @ 3GHz", "8 cores", "31.3 GiB", "linux/amd64", "kernel 6.1.0", "go1.26",
		"embedded single process, R1, sync_interval default",
		"`cosbench -duration 10s -out results > log`",
		"2026-03-04T05:06:07Z",
		"| ProcessCommand, many entities | c=64 | 12346 | 1.23 | 2.5 | 12.3 | 123 | 87.7 | 3 | conflict_retries=12; ratio_to_floor=0.812 |",
		`| GetState \| pipes | open loop 2500/s | 2500 | 0.0456 | 0.5 | 0.999 | 1 | 0 | 0 | while replaying; late_starts=0; target_rate=2500 |`,
		"- first note\n- second note\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if n := strings.Count(md, "| Scenario |"); n != 1 {
		t.Errorf("%d tables", n)
	}

	// No notes, no bullets; an empty report still renders the table header.
	buf.Reset()
	if err := (&Report{}).WriteMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "| Scenario |") || strings.Contains(buf.String(), "\n- ") {
		t.Errorf("empty report:\n%s", buf.String())
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	in := sampleReport()
	var buf bytes.Buffer
	if err := in.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\n  \"started\"") {
		t.Errorf("not indented:\n%s", buf.String())
	}
	for _, key := range []string{`"ops_per_sec"`, `"p50_ms"`, `"p999_ms"`, `"max_ms"`, `"cpu_per_op_us"`, `"first_error"`, `"memory_gib"`, `results > log"`} {
		if !strings.Contains(buf.String(), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	var out Report
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if !out.Started.Equal(in.Started) {
		t.Errorf("started %v, want %v", out.Started, in.Started)
	}
	out.Started = in.Started
	if !reflect.DeepEqual(&out, in) {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, *in)
	}
}

func TestFmtCompact(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {1, "1"}, {1.5, "1.5"}, {1.23456, "1.23"}, {12.345, "12.3"}, {123.45, "123"},
		{2500, "2500"}, {1234567.8, "1234568"}, {0.5, "0.5"}, {0.0123456, "0.0123"}, {0.000001234, "0.000001"},
		{-3.14159, "-3.14"}, {0.0000000001, "0"}, {9.9996, "10"},
	} {
		if got := fmtCompact(c.v); got != c.want {
			t.Errorf("fmtCompact(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}
