package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started: nodes, NATS servers, gRPC servers and connections.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
