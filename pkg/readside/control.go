package readside

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cosnats/cosnats/pkg/layout"
)

// controlPinHeader carries, on a control request, the pin id of the replica it is meant for.
const controlPinHeader = "Cos-Pin-Id"

// controlTimeout is how long the manager waits for the owning replica to confirm.
const controlTimeout = 2 * time.Second

// onControl hands a control request to the runner of its shard. The runner that holds the pin named in
// it answers once it starts no more deliveries of what it had fetched; the others stay silent.
func (p *Projector) onControl(m *nats.Msg) {
	s := p.runners[m.Subject]
	if s == nil {
		return
	}
	select {
	case s.ctl <- m:
	default: // a burst of requests: the manager falls back to unpinning
	}
}

// settle makes sure the replica delivering a shard has taken in what the manager just did to the
// consumer (paused, reset it): the replica holding the pin is asked to end its session — which drops
// the deliveries it had fetched and starts again at the ack floor — and confirms. A replica that does
// not answer is unpinned, and settle waits until its lease on the pin has run out: from then on it
// starts nothing more.
func (m *Manager) settle(ctx context.Context, readSide string, shard int) error {
	b := m.bound()
	c, err := b.js.Consumer(ctx, m.layout.EventStream(), m.layout.ReadSideConsumer(readSide, shard))
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	pin := pinnedClient(c.CachedInfo())
	if pin == "" {
		return nil
	}
	req := nats.NewMsg(m.layout.ReadSideControlSubject(readSide, shard))
	req.Header.Set(controlPinHeader, pin)
	rctx, cancel := context.WithTimeout(ctx, controlTimeout)
	_, err = b.js.Conn().RequestMsgWithContext(rctx, req)
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	m.log.Warn("the projector holding the shard did not confirm; unpinning it", "read_side", readSide, "shard", shard, "err", err)
	stream, err := b.js.Stream(ctx, m.layout.EventStream())
	if err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	if err := stream.UnpinConsumer(ctx, m.layout.ReadSideConsumer(readSide, shard), layout.ProjectorGroup); err != nil {
		return fmt.Errorf("unpin: %w", err)
	}
	t := time.NewTimer(PinnedTTL)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
