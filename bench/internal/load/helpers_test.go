package load

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// The load tool's tests cannot use services/internal/testkit (Go's internal
// rule keeps it to services/): these two are its counterparts here, one of
// each for the package.

// checkFor polls cond until it holds or the time is up.
func checkFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); !cond(); <-tick.C {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// runNATS starts an in-process NATS server on a free loopback port, shut
// down when the test ends.
func runNATS(t *testing.T) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}
