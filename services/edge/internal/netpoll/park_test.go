//go:build linux

package netpoll

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The portable poller owns the goroutines it parks: Close wakes those
// parked on sockets that are still open, without calling their handlers,
// and returns only once every one of them has ended.
func TestPortableCloseEndsParkedGoroutines(t *testing.T) {
	before := goleak.IgnoreCurrent()
	f := newFixture(t, true)
	var idle []*recorder
	for range 8 {
		_, s := f.pair()
		r, _ := f.watch(s, nil) // armed, nothing arrives: its goroutine stays parked
		idle = append(idle, r)
	}
	c, s := f.pair()
	woken, _ := f.watch(s, nil)
	write(t, c, "x")
	waitCall(t, woken, "handler of the socket that became readable")

	f.close()
	// The sockets are still open (the test's cleanup closes them): a
	// goroutine still parked on one would be reported here.
	goleak.VerifyNone(t, before)
	for i, r := range idle {
		if n := r.count(); n != 0 {
			t.Fatalf("idle socket %d: handler called %d times by Close", i, n)
		}
	}
	if n := woken.count(); n != 1 {
		t.Fatalf("readable socket: handler called %d times, want 1", n)
	}
}

// A handler running on a parked goroutine when Close comes is waited for.
func TestPortableCloseWaitsForRunningHandler(t *testing.T) {
	f := newFixture(t, true)
	release := make(chan struct{})
	c, s := f.pair()
	r, _ := f.watch(s, release)
	write(t, c, "x")
	waitCall(t, r, "handler")

	closed := make(chan struct{})
	go func() { defer close(closed); f.p.Close() }()
	select {
	case <-closed:
		close(release)
		t.Fatal("Close returned while a handler on a parked goroutine was running")
	case <-time.After(quietFor):
	}
	close(release)
	waitOn(t, closed, "Close returns once the handler has")
	select {
	case <-r.returns:
	default:
		t.Fatal("Close returned before the handler did")
	}
}
