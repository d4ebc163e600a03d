package config

import (
	"strings"
	"testing"
	"time"
)

// Subscriptions are on by default here (COS's default is off), and each variable is parsed and checked.
func TestSubscriptionSettings(t *testing.T) {
	c, _, err := FromEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Subscription{Enabled: true, Buffer: 128, StallTimeout: time.Second}); c.Subscription != want {
		t.Fatalf("defaults %+v, want %+v", c.Subscription, want)
	}
	c, _, err = FromEnv([]string{"COS_SUBSCRIPTION_ENABLED=false", "COS_SUBSCRIPTION_BUFFER=4", "COS_SUBSCRIPTION_STALL_TIMEOUT=250"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Subscription{Enabled: false, Buffer: 4, StallTimeout: 250 * time.Millisecond}); c.Subscription != want {
		t.Fatalf("got %+v, want %+v", c.Subscription, want)
	}
	for env, msg := range map[string]string{
		"COS_SUBSCRIPTION_ENABLED=maybe":     "COS_SUBSCRIPTION_ENABLED",
		"COS_SUBSCRIPTION_BUFFER=0":          "COS_SUBSCRIPTION_BUFFER: must be between 1 and 100000",
		"COS_SUBSCRIPTION_BUFFER=x":          "COS_SUBSCRIPTION_BUFFER",
		"COS_SUBSCRIPTION_STALL_TIMEOUT=0":   "COS_SUBSCRIPTION_STALL_TIMEOUT: must be between 1 and 3600000 milliseconds",
		"COS_SUBSCRIPTION_STALL_TIMEOUT=-5":  "COS_SUBSCRIPTION_STALL_TIMEOUT",
		"COS_SUBSCRIPTION_BUFFER=100001":     "COS_SUBSCRIPTION_BUFFER",
		"COS_SUBSCRIPTION_STALL_TIMEOUT=1e3": "COS_SUBSCRIPTION_STALL_TIMEOUT",
	} {
		if _, _, err := FromEnv([]string{env}); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("FromEnv(%s): %v, want an error with %q", env, err, msg)
		}
	}
}
