package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// GetRequest selects one stored message: by sequence, the last on a subject, or the first at or after
// Seq on a subject filter.
type GetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
}

type getResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Subject string    `json:"subject"`
		Seq     uint64    `json:"seq"`
		Header  []byte    `json:"hdrs,omitempty"`
		Data    []byte    `json:"data,omitempty"`
		Time    time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// defaultRequestTimeout bounds a read whose context has no deadline.
const defaultRequestTimeout = 5 * time.Second

// LeaderGet reads one message of a stream through the JSON API, which only the stream's leader
// answers. nats.go would use a direct get (any replica, possibly behind) whenever the stream allows
// them; the readers that must see every acknowledged append (a worker's reload after a conflict, a
// command's original result, an operator's skip) come here instead. A missing message is
// jetstream.ErrMsgNotFound.
func LeaderGet(ctx context.Context, nc *nats.Conn, stream string, req GetRequest) (*jetstream.RawStreamMsg, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultRequestTimeout)
		defer cancel()
	}
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+stream, body)
	if err != nil {
		return nil, err
	}
	var resp getResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return nil, fmt.Errorf("message get on %s: undecodable reply: %w", stream, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrMsgNotFound
		}
		return nil, resp.Error
	}
	if resp.Message == nil {
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	m := resp.Message
	var hdr nats.Header
	if len(m.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("message get on %s: sequence %d: headers: %w", stream, m.Seq, err)
		}
	}
	return &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Seq, Header: hdr, Data: m.Data, Time: m.Time}, nil
}

// errBehind means the replica that answered a direct get has not stored the barrier yet.
var errBehind = errors.New("the replica that answered has not caught up with the barrier")

// lastUpTo asks any replica (a direct get) for the last message on subject at or before the barrier at
// sequence barrier, together with the last message on syncSubject. Because the barrier is itself on
// syncSubject, the replica proves it has stored everything up to it by returning it: a replica that
// returns an older barrier (or none) is behind, and the read is errBehind. A subject without messages
// up to the barrier gives nil.
func lastUpTo(ctx context.Context, rs *replies, nc *nats.Conn, stream, subject, syncSubject string, barrier uint64) (*jetstream.RawStreamMsg, error) {
	body, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		UpToSeq   uint64   `json:"up_to_seq"`
	}{[]string{subject, syncSubject}, barrier})
	if err != nil {
		return nil, err
	}
	inbox, ch, done, err := rs.expect(nc)
	if err != nil {
		return nil, fmt.Errorf("direct get on %s: %w", stream, err)
	}
	defer done()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, body); err != nil {
		return nil, fmt.Errorf("direct get on %s: %w", stream, err)
	}
	var last *jetstream.RawStreamMsg
	sawBarrier := false
	for {
		var m *nats.Msg
		select {
		case m = <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if code := m.Header.Get("Status"); code != "" {
			switch code {
			case "204": // end of batch
				if !sawBarrier {
					return nil, errBehind
				}
				return last, nil
			case "404": // nothing on either subject: not even an older barrier
				return nil, errBehind
			case "503":
				return nil, nats.ErrNoResponders
			default:
				return nil, fmt.Errorf("direct get on %s: status %s %s", stream, code, m.Header.Get("Description"))
			}
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("direct get on %s: bad %s header: %w", stream, jetstream.SequenceHeader, err)
		}
		switch m.Header.Get(jetstream.SubjectHeader) {
		case syncSubject:
			if seq != barrier {
				return nil, errBehind
			}
			sawBarrier = true
		case subject:
			last = &jetstream.RawStreamMsg{Subject: subject, Sequence: seq, Header: m.Header, Data: m.Data}
		default:
			return nil, fmt.Errorf("direct get on %s: a reply for subject %q", stream, m.Header.Get(jetstream.SubjectHeader))
		}
	}
}

// replies receives the answers to multi-message requests on one subscription for the connection's
// life (a subscription per request would cost a SUB and an UNSUB, each spread across the cluster's
// routes, on every read). Each request gets its own token under the subscription's prefix.
type replies struct {
	once   sync.Once
	err    error
	prefix string

	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
	next    uint64
}

// expect returns the reply subject of a new request, the channel its replies arrive on (in order; up
// to four: a direct get's two messages and its end-of-batch marker), and done, which forgets it.
func (r *replies) expect(nc *nats.Conn) (string, <-chan *nats.Msg, func(), error) {
	r.once.Do(func() {
		r.prefix = nc.NewInbox() + "."
		r.waiting = map[string]chan *nats.Msg{}
		_, r.err = nc.Subscribe(r.prefix+"*", r.route)
	})
	if r.err != nil {
		return "", nil, nil, r.err
	}
	ch := make(chan *nats.Msg, 4)
	r.mu.Lock()
	r.next++
	token := strconv.FormatUint(r.next, 36)
	r.waiting[token] = ch
	r.mu.Unlock()
	return r.prefix + token, ch, func() {
		r.mu.Lock()
		delete(r.waiting, token)
		r.mu.Unlock()
	}, nil
}

// route hands a reply to its request; a late reply (its request gave up) or a surplus one is dropped
// rather than block the connection's delivery.
func (r *replies) route(m *nats.Msg) {
	r.mu.Lock()
	ch := r.waiting[strings.TrimPrefix(m.Subject, r.prefix)]
	r.mu.Unlock()
	if ch != nil {
		select {
		case ch <- m:
		default:
		}
	}
}
