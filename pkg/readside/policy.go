package readside

import (
	"math/rand/v2"
	"time"

	"github.com/cosnats/cosnats/pkg/config"
)

// Action is what to do with an event whose delivery failed.
type Action int

// The actions.
const (
	Retry Action = iota // redeliver after Delay; the shard waits (order is kept)
	Skip                // acknowledge without success and go on
	Stop                // stop the shard until an operator resumes it
)

// Decision is a failure policy's answer.
type Decision struct {
	Action Action
	Delay  time.Duration
}

// Policy applies a read side's failure policy. Everything about timing is a setting so tests need not
// wait for production delays.
type Policy struct {
	Kind          config.FailurePolicy
	BackoffBase   time.Duration  // first retry delay of the default policy
	BackoffMax    time.Duration  // cap of the default policy's delay
	ReplayDelay   time.Duration  // delay between REPLAY_* retries (COS: 5 s)
	ReplayRetries int            // retries before REPLAY_* skip or stop (COS: 5)
	Jitter        func() float64 // in [0,1); nil = math/rand
}

// OnFailure decides after the deliveries-th delivery of an event failed (1 = first attempt).
func (p Policy) OnFailure(deliveries uint64) Decision {
	switch p.Kind {
	case config.FailureStop:
		return Decision{Action: Stop}
	case config.FailureSkip:
		return Decision{Action: Skip}
	case config.FailureReplaySkip, config.FailureReplayStop:
		if deliveries <= uint64(p.ReplayRetries) {
			return Decision{Action: Retry, Delay: p.ReplayDelay}
		}
		if p.Kind == config.FailureReplaySkip {
			return Decision{Action: Skip}
		}
		return Decision{Action: Stop}
	}
	return Decision{Action: Retry, Delay: p.backoff(deliveries)}
}

// backoff is capped exponential with jitter: a delay d becomes a random value in [d/2, d), so replicas
// and shards failing together do not retry in lockstep.
func (p Policy) backoff(deliveries uint64) time.Duration {
	d := p.BackoffBase
	for i := uint64(1); i < deliveries && d < p.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, p.BackoffMax)
	j := p.Jitter
	if j == nil {
		j = rand.Float64
	}
	return d/2 + time.Duration(j()*float64(d/2))
}
