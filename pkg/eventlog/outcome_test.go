package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/cosnats/cosnats/pkg/entity"
	"github.com/cosnats/cosnats/pkg/layout"
	"github.com/cosnats/cosnats/pkg/natsembed"
)

// startServer runs an embedded server listening on loopback.
func startServer(t *testing.T) *natsembed.Server {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// openLog connects to srv with the connection settings the product uses (nothing buffered while
// reconnecting) and opens the event log.
func openLog(t *testing.T, srv *natsembed.Server) (*Log, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.ReconnectBufSize(-1), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(context.Background(), js, Config{Layout: layout.Default(), Replicas: 1, NumShards: 9})
	if err != nil {
		t.Fatal(err)
	}
	return l, nc
}

func key(t *testing.T, id string) entity.Key {
	t.Helper()
	k, err := entity.NewKey(id, 9)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// An append refused before it left the process stored nothing, and says so.
func TestDefiniteFailures(t *testing.T) {
	srv := startServer(t)
	l, nc := openLog(t, srv)
	ctx := context.Background()
	big := make([]byte, nc.MaxPayload()+1)
	for _, tt := range []struct {
		name   string
		events [][]byte
	}{
		{"one event over max_payload", [][]byte{big}},
		{"batch with an event over max_payload", [][]byte{nil, big, nil}},
		{"more events than a batch holds", make([][]byte, MaxBatch+1)},
	} {
		_, err := l.Append(ctx, Append{Key: key(t, "e"), CommandID: "c", Events: tt.events})
		if err == nil || !IsDefinite(err) {
			t.Errorf("%s: %v, definite=%v", tt.name, err, IsDefinite(err))
		}
	}
	// No stream listens on the subject: nothing can have been stored.
	other, _ := layout.New("OTHER")
	stray := &Log{js: l.js, stream: l.stream, layout: other}
	for _, n := range []int{1, 3} {
		if _, err := stray.Append(ctx, Append{Key: key(t, "e"), CommandID: "c", Events: make([][]byte, n)}); err == nil || !IsDefinite(err) {
			t.Errorf("append of %d without a stream: %v, definite=%v", n, err, IsDefinite(err))
		}
	}
	for _, code := range []jetstream.ErrorCode{codeAtomicTooManyInflight, codeBatchTooManyInflight} {
		err := classify(&jetstream.APIError{ErrorCode: code, Code: 429})
		if !errors.Is(err, ErrBusy) || !IsDefinite(err) {
			t.Errorf("code %d: %v", code, err)
		}
	}
	info, err := l.stream.Info(ctx)
	if err != nil || info.State.Msgs != 0 {
		t.Fatalf("stream holds %d messages (%v)", info.State.Msgs, err)
	}
}

// While the connection is down an append fails at once and is never sent later: nothing is buffered
// for after the reconnect, when the caller has long been answered.
func TestAppendWhileDisconnectedIsNeverSentLater(t *testing.T) {
	srv := startServer(t)
	l, nc := openLog(t, srv)
	down := make(chan struct{})
	nc.SetDisconnectErrHandler(func(*nats.Conn, error) { close(down) })
	srv.Shutdown()
	<-down
	for _, n := range []int{1, 2} {
		_, err := l.Append(context.Background(), Append{Key: key(t, "e"), CommandID: "c", Events: make([][]byte, n)})
		if !errors.Is(err, nats.ErrReconnectBufExceeded) || !IsDefinite(err) {
			t.Fatalf("append of %d while disconnected: %v", n, err)
		}
	}
}

// A batch waits no longer than its context allows, and which step failed decides whether its outcome is
// known: before the commit nothing can be stored; a commit without an answer may have been applied.
func TestBatchOutcomeFollowsTheStepThatFailed(t *testing.T) {
	srv := startServer(t)
	l, nc := openLog(t, srv)
	// A stand-in for the stream that answers the first message of a batch (or not) and never the commit.
	other, _ := layout.New("SILENT")
	silent := &Log{js: l.js, stream: l.stream, layout: other}
	for _, answerFirst := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		sub, err := nc.Subscribe(other.EventSubjects(), func(m *nats.Msg) {
			if m.Header.Get(batchSeqHeader) == "1" && answerFirst {
				_ = m.Respond(nil)
				return
			}
			if m.Reply != "" {
				cancel() // the caller gives up while the store is silent
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		_, err = silent.Append(ctx, Append{Key: key(t, "e"), CommandID: "c", Events: make([][]byte, 3)})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("answerFirst=%v: %v, want the caller's cancellation", answerFirst, err)
		}
		if definite := IsDefinite(err); definite == answerFirst {
			t.Fatalf("answerFirst=%v: definite=%v (%v)", answerFirst, definite, err)
		}
		_ = sub.Unsubscribe()
		cancel()
	}
}

// The header reserve covers the largest headers an event can carry: a 128-character command id, the
// largest idempotency window (256) with 20-digit sequences, and the batch and expected-sequence headers.
func TestHeaderBytesCoverTheLargestHeaders(t *testing.T) {
	id := strings.Repeat("x", 128)
	var recent Recent
	for i := range 256 {
		recent = recent.Push(fmt.Sprint("command-", i), 1<<63+uint64(i), 256)
	}
	h := nats.Header{}
	h.Set(HeaderCommandID, id)
	h.Set(HeaderRecent, recent.String())
	h.Set(jetstream.ExpectedLastSubjSeqHeader, fmt.Sprint(uint64(1<<64-1)))
	h.Set(batchIDHeader, nuid.Next())
	h.Set(batchSeqHeader, fmt.Sprint(MaxBatch))
	h.Set(batchCommitHeader, "1")
	wire := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			wire += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	if got := HeaderBytes(id, recent); got < wire {
		t.Fatalf("HeaderBytes = %d, the headers take %d bytes on the wire", got, wire)
	}
}
