package wsconn

import (
	"testing"

	"go.uber.org/goleak"
)

// Writers, readers and socket pairs all run goroutines: none may outlive
// the tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
