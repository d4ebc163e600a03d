package ctl_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started (nodes, servers, connections), and cosctl leaves nothing running:
// a watch's stream reader ends with it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server's file store flush loop can outlive a Shutdown that raced a stream's creation (as
		// in pkg/node's tests).
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"))
}
