package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Headers of JetStream's atomic batch publish (nats-server ≥ 2.12, stream flag allow_atomic).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// batchReply is the server's answer to a batch message sent as a request.
type batchReply struct {
	Error    *jetstream.APIError `json:"error,omitempty"`
	Stream   string              `json:"stream"`
	Sequence uint64              `json:"seq"`
	BatchID  string              `json:"batch"`
	Count    int                 `json:"count"`
}

// publishBatch stores msgs as one atomic batch and returns the stream sequence of the last one. The
// server applies a batch only when its commit (the last message) arrives and drops an uncommitted one,
// so every failure before the commit is sent is definite (errNotSent); only a commit whose answer does
// not come leaves the outcome open. The first message is sent as a request, so a batch the stream
// refuses (a stale expected sequence, too many batches in flight) fails before the rest is sent. ctx
// bounds every wait.
func publishBatch(ctx context.Context, nc *nats.Conn, msgs []*nats.Msg) (uint64, error) {
	id := nuid.Next()
	last := len(msgs) - 1
	for i, m := range msgs {
		m.Header.Set(batchIDHeader, id)
		m.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		switch {
		case i == last:
			m.Header.Set(batchCommitHeader, "1")
		case i == 0:
			resp, err := nc.RequestMsgWithContext(ctx, m)
			if err != nil {
				return 0, fmt.Errorf("%w: first message of the batch: %w", errNotSent, err)
			}
			if len(resp.Data) > 0 {
				var r batchReply
				if err := json.Unmarshal(resp.Data, &r); err == nil && r.Error != nil {
					return 0, r.Error
				}
			}
			continue
		default:
			if err := nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("%w: message %d of the batch: %w", errNotSent, i+1, err)
			}
			continue
		}
	}
	resp, err := nc.RequestMsgWithContext(ctx, msgs[last])
	if err != nil {
		return 0, fmt.Errorf("commit of the batch: %w", err)
	}
	var r batchReply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, fmt.Errorf("commit of the batch: undecodable answer %q", resp.Data)
	}
	if r.Error != nil {
		return 0, r.Error
	}
	if r.BatchID != id || r.Count != len(msgs) || r.Sequence == 0 {
		return 0, errors.New("commit of the batch: the answer is for another batch")
	}
	return r.Sequence, nil
}
