package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	cospb "github.com/cosnats/cosnats/gen/chief_of_state/v1"
	"github.com/cosnats/cosnats/pkg/bench"
)

type checkConfig struct {
	minRatio float64
	setups   []string
	env      []string
	entities int
	out      string
}

// runCheck is cosbench -check: the ratios of ours to the floor in a minute, for a person or a script
// (non-zero exit when a ratio is under the threshold).
func runCheck(ctx context.Context, c checkConfig) error {
	tmp, err := os.MkdirTemp("", "cosbench-check-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	o := bench.CheckOptions{
		Dir: tmp, Entities: c.entities, Round: 3 * time.Second, Rounds: 3, Env: c.env,
		Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	}
	for _, s := range c.setups {
		o.Setups = append(o.Setups, strings.TrimSpace(s))
	}
	o.Distributed = distributedPair(c.env)
	results, err := bench.Check(ctx, o)
	if err != nil {
		return err
	}
	fmt.Printf("%-16s %6s  %10s  %10s  %s\n", "setup", "ratio", "ours/s", "floor/s", "rounds")
	var low []string
	for _, r := range results {
		fmt.Printf("%-16s %6.2f  %10.0f  %10.0f  %s\n", r.Setup, r.Ratio, r.OursPerSec, r.FloorPerSec, bench.FormatRatios(r.RoundRatios))
		if r.Errors > 0 {
			low = append(low, fmt.Sprintf("%s: %d errors (first: %s)", r.Setup, r.Errors, r.FirstError))
		}
		if r.Ratio < c.minRatio {
			low = append(low, fmt.Sprintf("%s: ratio %.2f < %.2f", r.Setup, r.Ratio, c.minRatio))
		}
	}
	if len(low) > 0 {
		return fmt.Errorf("check failed: %s", strings.Join(low, "; "))
	}
	fmt.Printf("ok: every ratio >= %.2f\n", c.minRatio)
	return nil
}

// distributedPair starts a distributed setup of the check: our binaries and the floor's parts as
// processes (see children.go).
func distributedPair(env []string) func(ctx context.Context, dir string, replicas int) (ours, floor cospb.ChiefOfStateServiceClient, stop func(), err error) {
	return func(ctx context.Context, dir string, replicas int) (cospb.ChiefOfStateServiceClient, cospb.ChiefOfStateServiceClient, func(), error) {
		return bench.DistributedPair(ctx, selfChildren{}, dir, replicas, env)
	}
}
