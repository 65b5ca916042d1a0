package callout

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestIdentify_SharedAskOutlivesTheCallerThatStartedIt: concurrent asks for
// one credential share one request, whose deadline is its own: the caller
// that started it giving up (its context ends) neither fails the others nor
// stops the request, and the answer is cached for the next caller.
func TestIdentify_SharedAskOutlivesTheCallerThatStartedIt(t *testing.T) {
	ns := edgetest.RunNATS(t)
	app := edgetest.Connect(t, ns.ClientURL())
	var asked atomic.Int64
	held := make(chan *nats.Msg, 4)
	sub, err := app.Subscribe("app.auth", func(m *nats.Msg) { asked.Add(1); held <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := app.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := edgetest.Connect(t, ns.ClientURL())
	c := New(nc, Config{Subject: "app.auth", Timeout: 10 * time.Second, CacheSize: 10, CacheTTL: time.Minute})
	req := &wire.CalloutRequest{Edge: "e1", Cookies: map[string]string{"sid": "s1"}}

	first, cancel := context.WithCancel(context.Background())
	firstDone := make(chan error, 1)
	go func() { _, err := c.Identify(first, req); firstDone <- err }()
	var m *nats.Msg
	select {
	case m = <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached the application")
	}
	second := make(chan *wire.CalloutResponse, 1)
	go func() {
		id, err := c.Identify(context.Background(), req)
		if err != nil {
			t.Errorf("second caller: %v", err)
			second <- nil
			return
		}
		second <- &wire.CalloutResponse{User: id.User}
	}()
	cancel()
	if err := <-firstDone; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first caller after giving up: %v, want ErrUnavailable", err)
	}
	data, _ := json.Marshal(wire.CalloutResponse{User: "alice"})
	if err := m.Respond(data); err != nil {
		t.Fatal(err)
	}
	if got := <-second; got == nil || got.User != "alice" {
		t.Fatalf("second caller got %+v, want alice", got)
	}
	if id, err := c.Identify(context.Background(), req); err != nil || id.User != "alice" {
		t.Fatalf("cached answer: %v %v", id, err)
	}
	if got := asked.Load(); got != 1 {
		t.Fatalf("the application was asked %d times, want 1", got)
	}
}
