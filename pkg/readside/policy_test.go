package readside

import (
	"testing"
	"time"

	"github.com/cosnats/cosnats/pkg/config"
)

func TestPolicies(t *testing.T) {
	base := Policy{BackoffBase: time.Second, BackoffMax: 8 * time.Second, ReplayDelay: 5 * time.Second, ReplayRetries: 5, Jitter: func() float64 { return 0.999 }}
	with := func(k config.FailurePolicy) Policy { p := base; p.Kind = k; return p }
	if d := with(config.FailureStop).OnFailure(1); d.Action != Stop {
		t.Fatalf("STOP: %+v", d)
	}
	if d := with(config.FailureSkip).OnFailure(1); d.Action != Skip {
		t.Fatalf("SKIP: %+v", d)
	}
	for _, k := range []config.FailurePolicy{config.FailureReplaySkip, config.FailureReplayStop} {
		for n := uint64(1); n <= 5; n++ {
			if d := with(k).OnFailure(n); d.Action != Retry || d.Delay != 5*time.Second {
				t.Fatalf("%s after %d: %+v", k, n, d)
			}
		}
	}
	if d := with(config.FailureReplaySkip).OnFailure(6); d.Action != Skip {
		t.Fatalf("REPLAY_SKIP after 6: %+v", d)
	}
	if d := with(config.FailureReplayStop).OnFailure(6); d.Action != Stop {
		t.Fatalf("REPLAY_STOP after 6: %+v", d)
	}
	// Default: exponential, capped, jittered into [d/2, d).
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}
	for i, w := range want {
		d := with(config.FailureRetry).OnFailure(uint64(i + 1))
		if d.Action != Retry || d.Delay < w/2 || d.Delay >= w {
			t.Fatalf("retry %d: %+v, want a delay in [%s, %s)", i+1, d, w/2, w)
		}
	}
	low := with(config.FailureRetry)
	low.Jitter = func() float64 { return 0 }
	if d := low.OnFailure(3); d.Delay != 2*time.Second {
		t.Fatalf("zero jitter: %s", d.Delay)
	}
}

func TestHeaderValue(t *testing.T) {
	cases := map[string]string{"acc-1": "acc-1", "a b/c": "a b/c", "é": "%C3%A9", "a\nb": "a%0Ab"}
	for in, want := range cases {
		if got := HeaderValue(in); got != want {
			t.Errorf("HeaderValue(%q) = %q, want %q", in, got, want)
		}
	}
}
