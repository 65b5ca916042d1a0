package jsclient_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind (the
// test HTTP servers' included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
