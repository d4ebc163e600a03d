package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: nodes, NATS servers, gRPC servers and connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// A stream whose creation races with the server's Shutdown can keep its file store's flush loop
		// (and the access-time service it registered) running after Shutdown returned: nats-server's, seen
		// once in ten race runs with nothing else of that server left. Any other leak still fails.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"))
}
