package config

import "time"

// Subscription configures the live subscriptions the gateways serve (Subscribe, SubscribeAll and
// their Unsubscribe RPCs).
type Subscription struct {
	// Enabled (COS_SUBSCRIPTION_ENABLED [true]) serves them; off, they answer UNIMPLEMENTED as COS
	// does (whose default is off).
	Enabled bool
	// Buffer (COS_SUBSCRIPTION_BUFFER [128], 1..100000) is how many events a subscription holds
	// for a client that is not keeping up (and reads ahead from the stream).
	Buffer int
	// StallTimeout (COS_SUBSCRIPTION_STALL_TIMEOUT, milliseconds [1000], 1..3600000) is how long
	// that buffer may stay full before the client is cut off with RESOURCE_EXHAUSTED.
	StallTimeout time.Duration
}

// defaultSubscription is Subscription's defaults.
func defaultSubscription() Subscription {
	return Subscription{Enabled: true, Buffer: 128, StallTimeout: time.Second}
}

// parse reads the COS_SUBSCRIPTION_* variables.
func (s *Subscription) parse(p *parser) {
	p.bool("COS_SUBSCRIPTION_ENABLED", &s.Enabled)
	p.int("COS_SUBSCRIPTION_BUFFER", &s.Buffer)
	p.duration("COS_SUBSCRIPTION_STALL_TIMEOUT", time.Millisecond, &s.StallTimeout)
}

func (s Subscription) check(k *checker) {
	k.between("COS_SUBSCRIPTION_BUFFER", s.Buffer, 1, 100000)
	if s.StallTimeout < time.Millisecond || s.StallTimeout > time.Hour {
		k.fail("COS_SUBSCRIPTION_STALL_TIMEOUT: must be between 1 and 3600000 milliseconds, got %v", s.StallTimeout)
	}
}
