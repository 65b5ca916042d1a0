package devstack_test

import (
	"fmt"
	"os"
	"testing"
)

// skipLogEnv names the file make test has the tests append their skips to:
// go test shows a skip only with -v, and make test ends with the list.
const skipLogEnv = "WSGATE_SKIP_LOG"

// recordSkip appends "<test>: <reason>" to the file skipLogEnv names, if
// any. Appends of one short line are atomic, so parallel tests may share it.
func recordSkip(t *testing.T, reason string) {
	t.Helper()
	path := os.Getenv(skipLogEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("%s: %v", skipLogEnv, err)
		return
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "services/devstack %s: %s\n", t.Name(), reason); err != nil {
		t.Errorf("%s: %v", skipLogEnv, err)
	}
}
