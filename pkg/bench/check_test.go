package bench

import (
	"context"
	"testing"
	"time"
)

// The live check compares ours with the floor in rounds on a real embedded system and reports a ratio
// for each setup; an unknown setup is an error, not a silent skip.
func TestCheckR1(t *testing.T) {
	o := CheckOptions{Dir: t.TempDir(), Entities: 50, Round: 200 * time.Millisecond, Rounds: 3, Setups: []string{"r1"}, Log: t.Logf}
	res, err := Check(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Setup != "r1" || len(res[0].RoundRatios) != 3 || res[0].Errors != 0 {
		t.Fatalf("results %+v", res)
	}
	r := res[0]
	if r.OursPerSec <= 0 || r.FloorPerSec <= 0 || r.Ratio <= 0 || r.Ratio != median(r.RoundRatios) {
		t.Fatalf("rates %.0f/%.0f, ratio %.2f of %v", r.OursPerSec, r.FloorPerSec, r.Ratio, r.RoundRatios)
	}
	o.Setups = []string{"r2"}
	if _, err := Check(context.Background(), o); err == nil {
		t.Fatal("an unknown setup was accepted")
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
