package netpoll

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// poller's loop, its workers and any handler it started must all have
// ended once Close returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
