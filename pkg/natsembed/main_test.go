package natsembed_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops the servers and connections it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
