package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
)

// CheckOptions shape the live check: a short run that compares ours with the floor in each setup.
type CheckOptions struct {
	Dir      string        // scratch directory
	Entities int           // entities written round-robin (each written once before measuring)
	Round    time.Duration // one measurement of ours or of the floor
	Rounds   int           // rounds per setup; each round measures ours, then the floor
	Env      []string      // extra COS_* settings
	// Setups are the setups to check, by name: "r1", "r3", "distributed-r1", "distributed-r3".
	Setups []string
	// Distributed starts ours (gateway and worker processes) and the distributed floor (front and back
	// processes) against a NATS of the given replicas in child processes; nil skips those setups.
	Distributed func(ctx context.Context, dir string, replicas int) (ours, floor cospb.ChiefOfStateServiceClient, stop func(), err error)
	Log         func(format string, args ...any)
}

// CheckResult is one setup's comparison.
type CheckResult struct {
	Setup       string    `json:"setup"`
	Ratio       float64   `json:"ratio"`        // median over the rounds of ours/floor throughput
	RoundRatios []float64 `json:"round_ratios"` // each round's ours/floor
	OursPerSec  float64   `json:"ours_per_sec"` // median of ours' rounds
	FloorPerSec float64   `json:"floor_per_sec"`
	OursCPUUs   float64   `json:"ours_cpu_us_per_op"` // process CPU per command (in-process setups only)
	FloorCPUUs  float64   `json:"floor_cpu_us_per_op"`
	Errors      int64     `json:"errors"`
	FirstError  string    `json:"first_error,omitempty"`
}

// Check measures c=64 throughput of ours and of the floor, alternately, in each setup. Alternating
// rounds on the same servers make the ratio robust to the machine's drift (on 2 shared cores two runs
// of the same thing differ by ±20 %); the median of the rounds is reported.
func Check(ctx context.Context, o CheckOptions) ([]CheckResult, error) {
	var out []CheckResult
	for _, name := range o.Setups {
		ours, floor, stop, err := o.start(ctx, name)
		if err != nil {
			return out, fmt.Errorf("check %s: %w", name, err)
		}
		res := o.compare(ctx, name, ours, floor)
		stop()
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		o.Log("%-16s ratio %.2f (rounds %s), ours %.0f/s, floor %.0f/s", name, res.Ratio, FormatRatios(res.RoundRatios), res.OursPerSec, res.FloorPerSec)
		out = append(out, res)
	}
	return out, nil
}

func (o CheckOptions) start(ctx context.Context, name string) (ours, floor cospb.ChiefOfStateServiceClient, stop func(), err error) {
	dir := filepath.Join(o.Dir, "check-"+name)
	switch name {
	case "r1", "r3":
		set := Setup{Dir: dir, Replicas: map[string]int{"r1": 1, "r3": 3}[name], Env: o.Env}
		sys, err := Start(ctx, set)
		if err != nil {
			return nil, nil, nil, err
		}
		addr, stopFloor, err := StartFloor(ctx, sys.JS, sys.Handler, set.Replicas)
		if err != nil {
			sys.Close()
			return nil, nil, nil, err
		}
		fl, closeFloor, err := dialClient(addr)
		if err != nil {
			stopFloor()
			sys.Close()
			return nil, nil, nil, err
		}
		return sys.Client, fl, func() { closeFloor(); stopFloor(); sys.Close() }, nil
	case "distributed-r1", "distributed-r3":
		if o.Distributed == nil {
			return nil, nil, nil, fmt.Errorf("the distributed setups need child processes (run cosbench itself)")
		}
		return o.Distributed(ctx, dir, map[string]int{"distributed-r1": 1, "distributed-r3": 3}[name])
	}
	return nil, nil, nil, fmt.Errorf("unknown setup %q (r1, r3, distributed-r1, distributed-r3)", name)
}

// compare writes every entity once on each side (the steady state), then alternates ours and the floor.
func (o CheckOptions) compare(ctx context.Context, name string, ours, floor cospb.ChiefOfStateServiceClient) CheckResult {
	res := CheckResult{Setup: name}
	prime(ctx, ours, "e-", o.Entities)
	prime(ctx, floor, "f-", o.Entities)
	var oursRates, floorRates, oursCPU, floorCPU []float64
	for range max(o.Rounds, 1) {
		a := ClosedLoop(ctx, name, "ours", 64, 0, o.Round, processOp(ours, "e-", o.Entities, 1))
		b := ClosedLoop(ctx, name, "floor", 64, 0, o.Round, processOp(floor, "f-", o.Entities, 1))
		for _, r := range []Result{a, b} {
			res.Errors += r.Errors
			if res.FirstError == "" {
				res.FirstError = r.FirstError
			}
		}
		oursRates, floorRates = append(oursRates, a.OpsPerSec), append(floorRates, b.OpsPerSec)
		oursCPU, floorCPU = append(oursCPU, a.CPUPerOpUs), append(floorCPU, b.CPUPerOpUs)
		if b.OpsPerSec > 0 {
			res.RoundRatios = append(res.RoundRatios, a.OpsPerSec/b.OpsPerSec)
		}
	}
	res.Ratio, res.OursPerSec, res.FloorPerSec = median(res.RoundRatios), median(oursRates), median(floorRates)
	if name == "r1" || name == "r3" { // elsewhere the work is in other processes
		res.OursCPUUs, res.FloorCPUUs = median(oursCPU), median(floorCPU)
	}
	return res
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// FormatRatios prints ratios with two decimals, space-separated.
func FormatRatios(xs []float64) string {
	out := ""
	for i, x := range xs {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%.2f", x)
	}
	return out
}
