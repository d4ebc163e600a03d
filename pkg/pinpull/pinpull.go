// Package pinpull drives the JetStream pull protocol for a consumer whose priority group pins one client
// at a time (pinned_client), proving rather than assuming that a session saw every delivery: read-side
// shards (pkg/readside) and the asynchronous command intake (pkg/intake) are delivered this way, one
// replica at a time, in stream order.
package pinpull

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// PinnedTTL is how long the server keeps a pin after the pinned client's last pull; a standby takes
// over within about this long after the pinned client goes away. Consumers pulled with a Puller must be
// created with it.
const PinnedTTL = 5 * time.Second

// The pull protocol is driven here rather than through nats.go's Consume, because a session must
// know, not assume, that it saw every delivery: the consumer numbers deliveries (1, 2, 3, … after a
// reset) and a session checks that they arrive without a gap, in stream order, under its own pin, and
// that the server keeps answering. Its own pull requests also give it a lease on the pin: the server
// keeps a pin for PinnedTTL after the last pull that carried it, so a pull the server answered proves
// the pin held until its send time + PinnedTTL.
const (
	pullExpiry    = PinnedTTL / 2 // a pull request lives this long on the server
	pullHeartbeat = time.Second   // the server's idle heartbeat on a waiting pull (≤ expiry/2)
	pullRenew     = PinnedTTL / 4 // a new pull goes out at least this often, renewing the pin
	leaseMargin   = time.Second   // the lease ends this long before the server could drop the pin
	maxPulls      = 3             // pull requests outstanding at once
	// silence is how long a session waits without hearing from the server (a message, a heartbeat, an
	// expired pull) while pulls are outstanding before it treats the connection as broken.
	silence = 2*pullHeartbeat + 500*time.Millisecond
)

// nextRequest is the body of a pull request ($JS.API.CONSUMER.MSG.NEXT).
type nextRequest struct {
	Batch     int           `json:"batch"`
	Expires   time.Duration `json:"expires"`
	Heartbeat time.Duration `json:"idle_heartbeat"`
	Group     string        `json:"group"`
	PinID     string        `json:"id,omitempty"`
}

// Headers of the pull protocol.
const (
	pinHeader         = "Nats-Pin-Id"
	lastConsumerSeqHd = "Nats-Last-Consumer"
	statusHeader      = "Status"
	descriptionHeader = "Description"
)

// pull is one outstanding pull request.
type pull struct {
	reply     string
	sent      time.Time
	remaining int
}

// Puller is one pull session: its own inbox (each pull replies on its own subject under it), the pulls
// in flight, and the bookkeeping that proves every delivery arrived. Status messages (heartbeats,
// expiries) name the pull they answer; deliveries carry their stream subject instead, so they are
// counted against the oldest pull, which the server fills first.
type Puller struct {
	nc      *nats.Conn
	next    string // the consumer's pull subject
	inbox   string
	sub     *nats.Subscription
	Msgs    chan *nats.Msg // what arrives on the session's inbox: hand each to Receive
	Pin     string         // "" = standby: pull without a pin, to be given one
	group   string
	batch   int
	n       int
	pulls   []*pull   // outstanding, oldest first
	lastMsg time.Time // last time anything arrived
	Lease   time.Time // the pin is surely ours until then (zero: not yet confirmed)

	lastDseq  uint64 // consumer sequence of the last delivery seen
	lastSseq  uint64 // stream sequence of the last delivery seen
	suspected uint64 // a heartbeat's last consumer sequence not seen yet (0 = none)
}

// New subscribes a fresh inbox for pulls from consumer (of stream) in priority group group, with pin
// ("" to wait in standby until the server pins this client). Nothing is pulled yet.
func New(nc *nats.Conn, stream, consumer, group, pin string, batch int) (*Puller, error) {
	p := &Puller{
		nc:      nc,
		next:    "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer,
		inbox:   nats.InboxPrefix + nuid.Next(),
		Msgs:    make(chan *nats.Msg, batch*maxPulls+64),
		Pin:     pin,
		group:   group,
		batch:   batch,
		lastMsg: time.Now(),
	}
	sub, err := nc.ChanSubscribe(p.inbox+".*", p.Msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the pull inbox: %w", err)
	}
	// The channel holds more than the consumer's max_ack_pending lets the server send; should it ever
	// overflow, the dropped delivery shows up as a gap.
	p.sub = sub
	return p, nil
}

// Close unsubscribes: whatever the server still sends to this inbox is lost, and a session that
// follows starts with a reset, so nothing depends on it.
func (p *Puller) Close() { _ = p.sub.Unsubscribe() }

// Maintain sends a pull when none is outstanding, when the newest is half used, or when the pin is due
// for renewal. It reports a failure to publish.
func (p *Puller) Maintain(now time.Time) error {
	if len(p.pulls) >= maxPulls {
		return nil
	}
	if len(p.pulls) > 0 {
		if nw := p.pulls[len(p.pulls)-1]; nw.remaining > p.batch/2 && now.Sub(nw.sent) < pullRenew {
			return nil
		}
	}
	p.n++
	reply := p.inbox + "." + strconv.Itoa(p.n)
	body, _ := json.Marshal(nextRequest{Batch: p.batch, Expires: pullExpiry, Heartbeat: pullHeartbeat, Group: p.group, PinID: p.Pin})
	if err := p.nc.PublishRequest(p.next, reply, body); err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	if len(p.pulls) == 0 {
		p.lastMsg = now // silence is counted from when something is outstanding
	}
	p.pulls = append(p.pulls, &pull{reply: reply, sent: now, remaining: p.batch})
	return nil
}

// find returns the index of the outstanding pull answered on reply, -1 when none is.
func (p *Puller) find(reply string) int {
	for i, pl := range p.pulls {
		if pl.reply == reply {
			return i
		}
	}
	return -1
}

func (p *Puller) remove(i int) { p.pulls = append(p.pulls[:i], p.pulls[i+1:]...) }

// answered notes that the server took pull i with the current pin: the pin held at its send time, so
// it holds for PinnedTTL after it (less a margin).
func (p *Puller) answered(i int) {
	if i < 0 || i >= len(p.pulls) || p.Pin == "" {
		return
	}
	if l := p.pulls[i].sent.Add(PinnedTTL - leaseMargin); l.After(p.Lease) {
		p.Lease = l
	}
}

// Event is what one arrival means to the session.
type Event int

const (
	None     Event = iota // nothing to act on (a heartbeat, an expired pull)
	Delivery              // a message to process
	Pinned                // a delivery in standby: the server pinned this client (drop the message)
	LostPin               // the server says the pin is not (any more) ours
	Broken                // a delivery went missing, came twice or out of order, or the consumer changed
)

// Receive classifies one arrival; for Broken the string says why.
func (p *Puller) Receive(m *nats.Msg, now time.Time) (Event, string) {
	p.lastMsg = now
	if status := m.Header.Get(statusHeader); status != "" && len(m.Data) == 0 {
		return p.status(p.find(m.Subject), status, m.Header)
	}
	if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
		return Broken, fmt.Sprintf("unexpected message on the pull inbox (reply %q)", m.Reply)
	}
	pin := m.Header.Get(pinHeader)
	switch {
	case p.Pin == "" && pin == "":
		return Broken, "a delivery without a pin id"
	case p.Pin == "":
		p.Pin = pin
		p.answered(0)
		return Pinned, ""
	case pin != p.Pin:
		return LostPin, ""
	}
	// The oldest outstanding pull is the one being filled (or a later one: its send time is the
	// cautious bound for the lease).
	if len(p.pulls) > 0 {
		p.answered(0)
		if p.pulls[0].remaining--; p.pulls[0].remaining <= 0 {
			p.remove(0)
		}
	}
	meta, err := m.Metadata()
	if err != nil {
		return Broken, fmt.Sprintf("delivery without JetStream metadata: %v", err)
	}
	dseq, sseq := meta.Sequence.Consumer, meta.Sequence.Stream
	switch {
	case dseq != p.lastDseq+1:
		return Broken, fmt.Sprintf("delivery %d after %d: a delivery was lost or the consumer was reset", dseq, p.lastDseq)
	case sseq <= p.lastSseq:
		return Broken, fmt.Sprintf("stream sequence %d after %d: a redelivery", sseq, p.lastSseq)
	}
	p.lastDseq, p.lastSseq = dseq, sseq
	if p.suspected <= dseq {
		p.suspected = 0
	}
	return Delivery, ""
}

// status handles a status message answering pull i (-1: a pull no longer outstanding).
func (p *Puller) status(i int, status string, h nats.Header) (Event, string) {
	switch status {
	case "100": // idle heartbeat, with the consumer's last delivery
		p.answered(i)
		if p.Pin == "" {
			return None, ""
		}
		last, err := strconv.ParseUint(h.Get(lastConsumerSeqHd), 10, 64)
		if err != nil {
			return None, ""
		}
		switch {
		case last < p.lastDseq:
			return Broken, fmt.Sprintf("the consumer's last delivery is %d, this session saw %d: it was reset", last, p.lastDseq)
		case p.suspected > p.lastDseq:
			// A replicated consumer may announce a delivery before sending it; one heartbeat later it
			// must have arrived.
			return Broken, fmt.Sprintf("delivery %d never arrived (last seen %d)", p.suspected, p.lastDseq)
		case last > p.lastDseq:
			p.suspected = last
		}
		return None, ""
	case "408": // the pull expired: the server had it
		p.answered(i)
		if i >= 0 {
			p.remove(i)
		}
		return None, ""
	case "423":
		if i >= 0 {
			p.remove(i)
		}
		return LostPin, ""
	case "404":
		if i >= 0 {
			p.remove(i)
		}
		return None, ""
	}
	if i >= 0 {
		p.remove(i)
	}
	return Broken, fmt.Sprintf("pull answered %s %s", status, h.Get(descriptionHeader))
}

// Quiet reports whether the server has been silent for too long while pulls are outstanding.
func (p *Puller) Quiet(now time.Time) bool {
	return len(p.pulls) > 0 && now.Sub(p.lastMsg) > silence
}

// Standby waits until the server pins this client: it pulls without a pin and returns the pin and its
// lease with the first delivery (which it drops: the session that follows starts at the ack floor).
// Every checkEvery it calls check, e.g. to reset a consumer that a client which went away left at its
// max_ack_pending (the server delivers, and so pins, nobody until those deliveries time out). Messages
// on discard are drained meanwhile (nil: none). When ctx ends it returns an empty pin and no error.
func Standby(ctx context.Context, nc *nats.Conn, stream, consumer, group string, checkEvery time.Duration,
	check func(context.Context), discard <-chan *nats.Msg) (string, time.Time, error) {
	pl, err := New(nc, stream, consumer, group, "", 1)
	if err != nil {
		return "", time.Time{}, err
	}
	defer pl.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		if err := pl.Maintain(time.Now()); err != nil {
			return "", time.Time{}, err
		}
		select {
		case <-ctx.Done():
			return "", time.Time{}, nil
		case <-discard:
		case m := <-pl.Msgs:
			switch ev, why := pl.Receive(m, time.Now()); ev {
			case Pinned:
				return pl.Pin, pl.Lease, nil
			case Broken:
				return "", time.Time{}, errors.New(why)
			}
		case now := <-tick.C:
			if pl.Quiet(now) {
				return "", time.Time{}, errors.New("no answer to pull requests")
			}
			if now.Sub(lastCheck) >= checkEvery {
				lastCheck = now
				check(ctx)
			}
		}
	}
}
