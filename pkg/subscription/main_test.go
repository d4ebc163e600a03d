package subscription_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: subscriptions (their pumps and senders), nodes, NATS servers and
// gRPC connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// nats-server's own, as in pkg/node: a stream created while its server shuts down can keep its
		// flush loop running after Shutdown returned.
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushStreamStateLoop"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server/ats.Register.func1"))
}
