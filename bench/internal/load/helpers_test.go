package load

import (
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// The load tool is a module of its own, built without the workspace
// (GOWORK=off) so that it depends on no wsgate code it measures, and Go's
// internal rule keeps services/internal/testkit to services/: these are
// its counterparts here, the one polling helper and the one way to run
// NATS of the package's tests.

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
	return runNATSWith(t, &natsserver.Options{})
}

// runJetStream is runNATS with JetStream on, stored in the test's
// temporary directory.
func runJetStream(t *testing.T) *natsserver.Server {
	t.Helper()
	return runNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
}

// runNATSWith starts a server with opts on a free loopback port.
func runNATSWith(t *testing.T, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	ns, err := natsserver.NewServer(opts)
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
