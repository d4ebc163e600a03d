package readside

import (
	"context"
	"time"

	"github.com/cosnats/cosnats/pkg/telemetry"
)

// reportEvery is how often a projector reports the lag and state of the shards it holds.
const reportEvery = 5 * time.Second

// report keeps cos_readside_lag_events and cos_readside_shard_state current for the shards this
// replica holds, from the same sources as GetReadSideStatus (the consumer and the status bucket); a
// shard held by another replica is reported by that one only, so sums over replicas stay true.
func (p *Projector) report(ctx context.Context, runners []*shardRunner) {
	t := time.NewTicker(reportEvery)
	defer t.Stop()
	for {
		for _, s := range runners {
			s.report(ctx)
		}
		select {
		case <-ctx.Done():
			for _, s := range runners {
				p.deps.Metrics.ForgetShard(s.rs.ID, s.shard)
			}
			return
		case <-t.C:
		}
	}
}

func (s *shardRunner) report(ctx context.Context) {
	m := s.p.deps.Metrics
	if !s.held.Load() {
		m.ForgetShard(s.rs.ID, s.shard)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.p.deps.JS.Consumer(ctx, s.p.cfg.Layout.EventStream(), s.name)
	if err != nil {
		return // NATS cannot answer now: the last values stand, cos_nats_connected tells why
	}
	info := c.CachedInfo()
	st, err := s.p.deps.Status.Get(ctx, s.rs.ID, s.shard)
	if err != nil {
		return
	}
	state := telemetry.ShardRunning
	switch {
	case st.GetStopped():
		state = telemetry.ShardStopped
	case pausedByOperator(info):
		state = telemetry.ShardPaused
	case st.GetFailing():
		state = telemetry.ShardFailing
	}
	m.Shard(s.rs.ID, s.shard, info.NumPending+uint64(info.NumAckPending), state)
}
