package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// replyWith returns a handler that replies with its name, so the capture
// shows which handler took a message.
func replyWith(name string) dispatcher.HandlerFunc {
	return func(_ context.Context, m *dispatcher.Message) error {
		return m.Reply("handled-by", name+" "+m.Action)
	}
}

func TestHandlePrefixRoutesExactFirstThenLongestPrefix(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "shop/special", replyWith("exact"))
		for _, p := range []string{"shop/", "shop/cart/"} {
			if err := d.HandlePrefix(p, replyWith(p)); err != nil {
				t.Fatalf("HandlePrefix(%q): %v", p, err)
			}
		}
	})
	if got, want := h.d.Prefixes(), []string{"shop/cart/", "shop/"}; !slices.Equal(got, want) {
		t.Fatalf("Prefixes %v, want %v", got, want)
	}
	for _, tt := range []struct{ action, want string }{
		{"shop/special", `"exact shop/special"`},
		{"shop/cart/add", `"shop/cart/ shop/cart/add"`},
		{"shop/pay", `"shop/ shop/pay"`},
		{"shop/cart", `"shop/ shop/cart"`},
	} {
		h.send(t, natstest.Envelope(tt.action, nil))
		r := h.capture.Next(t)
		if r.Subject != "ws.send.conn."+natstest.Connection || string(r.Outbound.Details) != tt.want {
			t.Errorf("%s: got %s on %s, want details %s", tt.action, r.Data, r.Subject, tt.want)
		}
		if got := h.waitHandled(t); got.action != tt.action || got.outcome != dispatcher.OutcomeOK {
			t.Errorf("%s: Handled hook got %+v", tt.action, got)
		}
	}
	// Actions nobody handles, and subjects that are no action, are dropped
	// without an answer and without a decode error.
	h.send(t, natstest.Envelope("other", nil))
	natstest.PublishRaw(t, h.edge, "ws.in.shop/x.y", []byte(`{}`))
	h.capture.Quiet(t, h.edge)
	if n := h.decodes.Load(); n != 0 {
		t.Fatalf("%d decode failures, want 0", n)
	}
}

func TestHandlePrefixErrorRepliesLikeHandle(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		if err := d.HandlePrefix("room/", func(context.Context, *dispatcher.Message) error {
			return dispatcher.NewError(404, "no such room")
		}); err != nil {
			t.Fatal(err)
		}
	})
	env := natstest.Envelope("room/join", "r1")
	h.send(t, env)
	r := h.capture.Next(t)
	if r.Outbound.Action != "room/join:error" || string(r.Outbound.Ref) != string(env.Ref) {
		t.Fatalf("got %s, want room/join:error with ref %s", r.Data, env.Ref)
	}
	if e := natstest.ErrorDetails(t, r); e != (wire.Error{Code: 404, Message: "no such room"}) {
		t.Fatalf("details %+v", e)
	}
}

func TestHandlePrefixRefusesBadPrefixes(t *testing.T) {
	d, err := dispatcher.New(natstest.Connect(t, natstest.RunServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, *dispatcher.Message) error { return nil }
	for _, p := range []string{"", "a.", "a*", ">", "a b", strings.Repeat("a", 129)} {
		if err := d.HandlePrefix(p, ok); !errors.Is(err, dispatcher.ErrInvalidAction) {
			t.Errorf("HandlePrefix(%.20q): got %v, want ErrInvalidAction", p, err)
		}
	}
	if err := d.HandlePrefix("a/", nil); !errors.Is(err, dispatcher.ErrNilHandler) {
		t.Errorf("nil handler: got %v", err)
	}
	if err := d.HandlePrefix("a/", ok); err != nil {
		t.Fatal(err)
	}
	if err := d.HandlePrefix("a/", ok); !errors.Is(err, dispatcher.ErrDuplicateAction) {
		t.Errorf("duplicate: got %v, want ErrDuplicateAction", err)
	}
	// A prefix alone is enough to start.
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer d.Drain(context.Background())
	if err := d.HandlePrefix("b/", ok); !errors.Is(err, dispatcher.ErrStarted) {
		t.Errorf("after Start: got %v, want ErrStarted", err)
	}
}

// Two replicas in one queue group, each with an exact handler and a prefix
// that covers it: every message is handled once, by the exact handler when
// there is one.
func TestHandlePrefixHandlesEachMessageOnceAcrossReplicas(t *testing.T) {
	const n = 100
	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	var (
		mu   sync.Mutex
		seen = map[string][]string{} // ref → handlers that took it
	)
	record := func(name string) dispatcher.HandlerFunc {
		return func(_ context.Context, m *dispatcher.Message) error {
			mu.Lock()
			seen[string(m.Ref)] = append(seen[string(m.Ref)], name+" "+m.Action)
			mu.Unlock()
			return nil
		}
	}
	for range 2 {
		d, err := dispatcher.New(natstest.Connect(t, srv), dispatcher.WithQueue("workers"))
		if err != nil {
			t.Fatal(err)
		}
		handle(t, d, "app/exact", record("exact"))
		if err := d.HandlePrefix("app/", record("prefix")); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.Drain(context.Background()); err != nil {
				t.Errorf("Drain: %v", err)
			}
		})
	}
	for i := range n {
		action := "app/exact"
		if i%2 == 1 {
			action = "app/other"
		}
		natstest.Publish(t, edge, "", natstest.Envelope(action, i))
	}
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(seen) != n {
			return fmt.Errorf("handled %d of %d", len(seen), n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for ref, by := range seen {
		if len(by) != 1 {
			t.Errorf("ref %s handled %d times: %v", ref, len(by), by)
			continue
		}
		if by[0] != "exact app/exact" && by[0] != "prefix app/other" {
			t.Errorf("ref %s handled by %q", ref, by[0])
		}
	}
}

// Another service in the same queue group, with exact actions only, keeps
// getting every message of its actions: the prefixes do not take them.
func TestHandlePrefixLeavesOtherServicesInTheQueueTheirActions(t *testing.T) {
	const n = 50
	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	var (
		mu  sync.Mutex
		got = map[string]int{} // "<service> <action>" → messages handled
	)
	count := func(service string) dispatcher.HandlerFunc {
		return func(_ context.Context, m *dispatcher.Message) error {
			mu.Lock()
			got[service+" "+m.Action]++
			mu.Unlock()
			return nil
		}
	}
	for _, register := range []func(*dispatcher.Dispatcher) error{
		func(d *dispatcher.Dispatcher) error { return d.HandlePrefix("shop/", count("routes")) },
		func(d *dispatcher.Dispatcher) error { return d.Handle("billing/pay", count("billing")) },
	} {
		d, err := dispatcher.New(natstest.Connect(t, srv), dispatcher.WithQueue("workers"))
		if err != nil {
			t.Fatal(err)
		}
		if err := register(d); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := d.Drain(context.Background()); err != nil {
				t.Errorf("Drain: %v", err)
			}
		})
	}
	for i := range n {
		natstest.Publish(t, edge, "", natstest.Envelope("billing/pay", i))
		natstest.Publish(t, edge, "", natstest.Envelope("shop/buy", i))
	}
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if got["billing billing/pay"] != n || got["routes shop/buy"] != n {
			return fmt.Errorf("handled %v", got)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("handled %v: the prefixes took another service's action", got)
	}
}

func TestMessageHeaderCarriesTheEdgeHeaders(t *testing.T) {
	got := make(chan nats.Header, 1)
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "traced", func(_ context.Context, m *dispatcher.Message) error {
			got <- m.Header()
			return nil
		})
	})
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	hdr := nats.Header{}
	hdr.Set(wire.HeaderTraceparent, tp)
	hdr.Set(wire.HeaderMsgID, "e1-42")
	natstest.PublishWithHeader(t, h.edge, "", natstest.Envelope("traced", nil), hdr)
	select {
	case hd := <-got:
		if hd.Get(wire.HeaderTraceparent) != tp || hd.Get(wire.HeaderMsgID) != "e1-42" {
			t.Fatalf("headers %v", hd)
		}
	case <-time.After(natstest.Wait):
		t.Fatal("handler not called")
	}
}

func TestMatchPrefix(t *testing.T) {
	prefixes := []string{"a/b/", "a/", "b"}
	for action, want := range map[string]string{"a/b/c": "a/b/", "a/x": "a/", "bb": "b", "c": ""} {
		if got, ok := dispatcher.MatchPrefix(prefixes, action); got != want || ok != (want != "") {
			t.Errorf("MatchPrefix(%q) = %q, %v; want %q", action, got, ok, want)
		}
	}
}

// A dispatcher that answers every "room/..." action with one handler, except
// "room/create", which has its own.
func ExampleDispatcher_HandlePrefix() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	d, err := dispatcher.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	err = d.HandlePrefix("room/", func(ctx context.Context, m *dispatcher.Message) error {
		room := strings.TrimPrefix(m.Action, "room/") // "room/lobby" → "lobby"
		return m.Reply("room/joined", room)
	})
	if err != nil {
		log.Fatal(err)
	}
	err = d.Handle("room/create", func(ctx context.Context, m *dispatcher.Message) error {
		return dispatcher.NewError(403, "rooms are created by admins")
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
	defer d.Drain(context.Background())
}
