package readside_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Projectors, managers, NATS and gRPC servers started by the tests must all stop.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
