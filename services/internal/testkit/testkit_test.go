package testkit

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a testing.TB whose Fatalf is recorded instead of ending the
// test, so that a helper's failure can be checked.
type recorder struct {
	testing.TB
	failed atomic.Bool
	msg    atomic.Value
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed.Store(true)
	r.msg.Store(fmt.Sprintf(format, args...))
	panic(errFatal)
}

var errFatal = errors.New("fatal")

// run calls f with r, recovering the panic a recorded Fatalf ends it with.
func (r *recorder) run(f func()) {
	defer func() {
		if p := recover(); p != nil && p != errFatal {
			panic(p)
		}
	}()
	f()
}

// TestCheckFor: CheckFor returns once f succeeds and fails with f's last
// error when it never does. Fails when it gives up early, never gives up,
// or hides the reason.
func TestCheckFor(t *testing.T) {
	t.Run("succeeds", func(t *testing.T) {
		var calls atomic.Int32
		r := &recorder{TB: t}
		r.run(func() {
			CheckFor(r, Timeout, time.Millisecond, func() error {
				if calls.Add(1) < 3 {
					return errors.New("not yet")
				}
				return nil
			})
		})
		if r.failed.Load() || calls.Load() != 3 {
			t.Fatalf("failed %v after %d calls, want success on the 3rd", r.failed.Load(), calls.Load())
		}
	})
	t.Run("gives up", func(t *testing.T) {
		r := &recorder{TB: t}
		r.run(func() {
			CheckFor(r, 20*time.Millisecond, time.Millisecond, func() error { return errors.New("still broken") })
		})
		if msg, _ := r.msg.Load().(string); !r.failed.Load() || msg != "after 20ms: still broken" {
			t.Fatalf("failed %v with %q", r.failed.Load(), msg)
		}
	})
}

// TestRunNATS: the server listens on loopback on a free port, and takes
// connections. Fails when a default is not applied.
func TestRunNATS(t *testing.T) {
	s := RunNATS(t, nil)
	if o := s.ClientURL(); o == "" || s.Addr() == nil {
		t.Fatal("no client URL")
	}
	if s.Addr().String()[:10] != "127.0.0.1:" {
		t.Fatalf("listens on %s, want loopback", s.Addr())
	}
	nc := Connect(t, s.ClientURL())
	if !nc.IsConnected() {
		t.Fatal("not connected")
	}
	js := RunJetStream(t)
	if !js.JetStreamEnabled() {
		t.Fatal("JetStream is off")
	}
}
