// Package testkit is what the tests of every services module share: one
// way to wait for a condition (CheckFor, after nats-server's test helper,
// and Eventually over it) and one way to run an in-process NATS server on a
// free loopback port. The edge's edgetest and the dispatcher's natstest
// build on it. Only tests import it.
//
// The load tool (module bench) cannot import it: Go's internal rule keeps
// services/internal to packages under services/.
package testkit

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Timeout is how long helpers wait for what should happen at once on
// loopback; only a failing test waits that long. It is generous, for a
// loaded two-core machine under -race.
const Timeout = 10 * time.Second

// Interval is how often the helpers poll.
const Interval = 5 * time.Millisecond

// CheckFor calls f every interval until it returns nil, and fails the test
// with f's last error if that does not happen within timeout.
func CheckFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		<-tick.C
	}
}

// Eventually polls cond until it holds, failing the test after Timeout.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, Timeout, what, cond)
}

// EventuallyWithin is Eventually with its own timeout, for what takes
// longer on a loaded machine (a JetStream cluster electing its meta
// leader, a thousand readers taking a round).
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	CheckFor(t, timeout, Interval, func() error {
		if cond() {
			return nil
		}
		return errors.New("timed out waiting for: " + what)
	})
}

// RunNATS starts an in-process NATS server with opts (nil: the defaults)
// and shuts it down when the test ends. Host defaults to 127.0.0.1 and
// Port to a free one; the server neither logs nor handles signals.
func RunNATS(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	if opts == nil {
		opts = &server.Options{}
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = server.RANDOM_PORT
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(Timeout) {
		s.Shutdown()
		t.Fatal("nats server did not start")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// RunJetStream is RunNATS with JetStream on, its store in a temporary
// directory of the test.
func RunJetStream(t testing.TB) *server.Server {
	t.Helper()
	return RunNATS(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
}

// Connect returns a connection to url, closed when the test ends.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
