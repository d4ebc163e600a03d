package readside

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/cosnats/cosnats/pkg/layout"
)

// The pull protocol is driven here rather than through nats.go's Consume, because the projector must
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

// puller is one pull session: its own inbox (each pull replies on its own subject under it), the pulls
// in flight, and the bookkeeping that proves every delivery arrived. Status messages (heartbeats,
// expiries) name the pull they answer; deliveries carry their stream subject instead, so they are
// counted against the oldest pull, which the server fills first.
type puller struct {
	nc      *nats.Conn
	next    string // the consumer's pull subject
	inbox   string
	sub     *nats.Subscription
	msgs    chan *nats.Msg
	pin     string // "" = standby: pull without a pin, to be given one
	batch   int
	n       int
	pulls   []*pull   // outstanding, oldest first
	lastMsg time.Time // last time anything arrived
	lease   time.Time // the pin is surely ours until then (zero: not yet confirmed)

	lastDseq  uint64 // consumer sequence of the last delivery seen
	lastSseq  uint64 // stream sequence of the last delivery seen
	suspected uint64 // a heartbeat's last consumer sequence not seen yet (0 = none)
}

// newPuller subscribes a fresh inbox. Nothing is pulled yet.
func newPuller(nc *nats.Conn, lay layout.Layout, consumer, pin string, batch int) (*puller, error) {
	p := &puller{
		nc:      nc,
		next:    "$JS.API.CONSUMER.MSG.NEXT." + lay.EventStream() + "." + consumer,
		inbox:   nats.InboxPrefix + nuid.Next(),
		msgs:    make(chan *nats.Msg, batch*maxPulls+64),
		pin:     pin,
		batch:   batch,
		lastMsg: time.Now(),
	}
	sub, err := nc.ChanSubscribe(p.inbox+".*", p.msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the pull inbox: %w", err)
	}
	// The channel holds more than the consumer's max_ack_pending lets the server send; should it ever
	// overflow, the dropped delivery shows up as a gap.
	p.sub = sub
	return p, nil
}

// close unsubscribes: whatever the server still sends to this inbox is lost, and a session that
// follows starts with a reset, so nothing depends on it.
func (p *puller) close() { _ = p.sub.Unsubscribe() }

// maintain sends a pull when none is outstanding, when the newest is half used, or when the pin is due
// for renewal. It reports a failure to publish.
func (p *puller) maintain(now time.Time) error {
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
	body, _ := json.Marshal(nextRequest{Batch: p.batch, Expires: pullExpiry, Heartbeat: pullHeartbeat, Group: layout.ProjectorGroup, PinID: p.pin})
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
func (p *puller) find(reply string) int {
	for i, pl := range p.pulls {
		if pl.reply == reply {
			return i
		}
	}
	return -1
}

func (p *puller) remove(i int) { p.pulls = append(p.pulls[:i], p.pulls[i+1:]...) }

// answered notes that the server took pull i with the current pin: the pin held at its send time, so
// it holds for PinnedTTL after it (less a margin).
func (p *puller) answered(i int) {
	if i < 0 || i >= len(p.pulls) || p.pin == "" {
		return
	}
	if l := p.pulls[i].sent.Add(PinnedTTL - leaseMargin); l.After(p.lease) {
		p.lease = l
	}
}

// event is what one arrival means to the session.
type event int

const (
	evNone     event = iota // nothing to act on (a heartbeat, an expired pull)
	evDelivery              // an event to hand to the read side
	evPinned                // a delivery in standby: the server pinned this replica
	evLostPin               // the server says the pin is not (any more) ours
	evBroken                // a delivery went missing, came twice or out of order, or the consumer changed
)

// receive classifies one arrival; for evBroken the string says why.
func (p *puller) receive(m *nats.Msg, now time.Time) (event, string) {
	p.lastMsg = now
	if status := m.Header.Get(statusHeader); status != "" && len(m.Data) == 0 {
		return p.status(p.find(m.Subject), status, m.Header)
	}
	if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
		return evBroken, fmt.Sprintf("unexpected message on the pull inbox (reply %q)", m.Reply)
	}
	pin := m.Header.Get(pinHeader)
	switch {
	case p.pin == "" && pin == "":
		return evBroken, "a delivery without a pin id"
	case p.pin == "":
		p.pin = pin
		p.answered(0)
		return evPinned, ""
	case pin != p.pin:
		return evLostPin, ""
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
		return evBroken, fmt.Sprintf("delivery without JetStream metadata: %v", err)
	}
	dseq, sseq := meta.Sequence.Consumer, meta.Sequence.Stream
	switch {
	case dseq != p.lastDseq+1:
		return evBroken, fmt.Sprintf("delivery %d after %d: a delivery was lost or the consumer was reset", dseq, p.lastDseq)
	case sseq <= p.lastSseq:
		return evBroken, fmt.Sprintf("stream sequence %d after %d: a redelivery", sseq, p.lastSseq)
	}
	p.lastDseq, p.lastSseq = dseq, sseq
	if p.suspected <= dseq {
		p.suspected = 0
	}
	return evDelivery, ""
}

// status handles a status message answering pull i (-1: a pull no longer outstanding).
func (p *puller) status(i int, status string, h nats.Header) (event, string) {
	switch status {
	case "100": // idle heartbeat, with the consumer's last delivery
		p.answered(i)
		if p.pin == "" {
			return evNone, ""
		}
		last, err := strconv.ParseUint(h.Get(lastConsumerSeqHd), 10, 64)
		if err != nil {
			return evNone, ""
		}
		switch {
		case last < p.lastDseq:
			return evBroken, fmt.Sprintf("the consumer's last delivery is %d, this session saw %d: it was reset", last, p.lastDseq)
		case p.suspected > p.lastDseq:
			// A replicated consumer may announce a delivery before sending it; one heartbeat later it
			// must have arrived.
			return evBroken, fmt.Sprintf("delivery %d never arrived (last seen %d)", p.suspected, p.lastDseq)
		case last > p.lastDseq:
			p.suspected = last
		}
		return evNone, ""
	case "408": // the pull expired: the server had it
		p.answered(i)
		if i >= 0 {
			p.remove(i)
		}
		return evNone, ""
	case "423":
		if i >= 0 {
			p.remove(i)
		}
		return evLostPin, ""
	case "404":
		if i >= 0 {
			p.remove(i)
		}
		return evNone, ""
	}
	if i >= 0 {
		p.remove(i)
	}
	return evBroken, fmt.Sprintf("pull answered %s %s", status, h.Get(descriptionHeader))
}

// quiet reports whether the server has been silent for too long while pulls are outstanding.
func (p *puller) quiet(now time.Time) bool {
	return len(p.pulls) > 0 && now.Sub(p.lastMsg) > silence
}
