package dispatcher_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: the
// dispatcher's, the NATS client's or the in-process NATS server's.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
