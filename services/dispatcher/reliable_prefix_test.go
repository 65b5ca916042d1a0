package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// prefixEvents records Hooks.PrefixConsumer, keyed "<action> <event>".
type prefixEvents struct {
	mu sync.Mutex
	n  map[string]int
}

func newPrefixEvents() *prefixEvents { return &prefixEvents{n: map[string]int{}} }

func (e *prefixEvents) hook(_, action string, ev dispatcher.PrefixConsumerEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.n[action+" "+string(ev)]++
}

func (e *prefixEvents) get(key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[key]
}

// reliableService is one dispatcher with reliable inbound: its exact
// handlers and its prefix handlers.
type reliableService struct {
	exact, prefixes map[string]dispatcher.HandlerFunc
}

// startService starts s on its own connection to ns, drained at cleanup
// (or earlier by the returned function).
func startService(t *testing.T, ns *server.Server, r dispatcher.ReliableOptions, s reliableService, opts ...dispatcher.Option) (*dispatcher.Dispatcher, func()) {
	t.Helper()
	nc := natstest.Connect(t, ns)
	opts = append([]dispatcher.Option{dispatcher.WithReliable(r),
		dispatcher.WithLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil)))}, opts...)
	d, err := dispatcher.New(nc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for action, f := range s.exact {
		handle(t, d, action, f)
	}
	for prefix, f := range s.prefixes {
		if err := d.HandlePrefix(prefix, f); err != nil {
			t.Fatalf("HandlePrefix(%q): %v", prefix, err)
		}
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	drain := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Drain(ctx); err != nil {
			t.Errorf("Drain: %v", err)
		}
	})
	t.Cleanup(drain)
	return d, drain
}

// streamHolds reports whether the inbound stream holds exactly n messages.
func streamHolds(st jetstream.Stream, n uint64) error {
	info, err := st.Info(context.Background())
	if err != nil {
		return err
	}
	if info.State.Msgs != n {
		return fmt.Errorf("stream holds %d messages, want %d", info.State.Msgs, n)
	}
	return nil
}

// tally counts the numbered actions each handler took: name → number →
// times.
type tally struct {
	mu sync.Mutex
	n  map[string]map[int]int
}

func newTally() *tally { return &tally{n: map[string]map[int]int{}} }

// handler returns a handler named name that counts the number in the
// details of each message it handles, with its action.
func (c *tally) handler(name string) dispatcher.HandlerFunc {
	return func(_ context.Context, m *dispatcher.Message) error {
		var n int
		if err := json.Unmarshal(m.Details, &n); err != nil {
			return err
		}
		if m.ID == "" || m.Attempt != 1 {
			return fmt.Errorf("reliable message %d: id %q attempt %d", n, m.ID, m.Attempt)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		key := name + " " + m.Action
		if c.n[key] == nil {
			c.n[key] = map[int]int{}
		}
		c.n[key][n]++
		return nil
	}
}

// check fails unless each handler-action took exactly the numbers in want,
// once each.
func (c *tally) check(want map[string][]int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, numbers := range want {
		if len(c.n[key]) != len(numbers) {
			return fmt.Errorf("%s took %v, want %v", key, c.n[key], numbers)
		}
		for _, n := range numbers {
			if c.n[key][n] != 1 {
				return fmt.Errorf("%s took %d %d times: %v", key, n, c.n[key][n], c.n[key])
			}
		}
	}
	if len(c.n) != len(want) {
		return fmt.Errorf("handled %v, want only %v", c.n, want)
	}
	return nil
}

// A reliable action under a prefix, stored while the dispatcher runs, is
// handled once by the prefix handler, with its ID and Attempt; a failing
// one is retried with backoff and dead-lettered like Handle's. Mutations
// that fail it: no consumer for prefix actions (nothing handled), handling
// the signal's core message too (handled twice, without ID), a consumer
// that does not count attempts (no dead letter).
func TestReliablePrefix_HandledOnceRetriedAndDeadLettered(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	dead, err := edge.SubscribeSync("ws.dead.>")
	if err != nil {
		t.Fatal(err)
	}
	var paid, failing attempts
	events := newPrefixEvents()
	const backoff = 100 * time.Millisecond
	startService(t, ns, dispatcher.ReliableOptions{MaxDeliver: 3, Backoff: []time.Duration{backoff}, AckWait: 5 * time.Second},
		reliableService{prefixes: map[string]dispatcher.HandlerFunc{"shop/": func(_ context.Context, m *dispatcher.Message) error {
			if m.Action == "shop/fail" {
				failing.add(m)
				return errors.New("card declined")
			}
			paid.add(m)
			return nil
		}}},
		dispatcher.WithHooks(dispatcher.Hooks{PrefixConsumer: events.hook}))

	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/pay", 1), "u1.p1")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := paid.len(); n != 1 {
			return fmt.Errorf("handled %d times", n)
		}
		return streamHolds(st, 0)
	})

	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/fail", 2), "u1.f1")
	subject, letter := nextDeadLetter(t, dead)
	if subject != "ws.dead.shop/fail" || letter.Attempts != 3 || letter.Error != "card declined" || letter.MsgID != "u1.f1" {
		t.Fatalf("dead letter on %s: %+v", subject, letter)
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return streamHolds(st, 0) })
	failing.mu.Lock()
	if len(failing.seen) != 3 {
		t.Fatalf("failing action handled %d times, want 3", len(failing.seen))
	}
	for i, m := range failing.seen {
		if m.Attempt != i+1 || m.ID != "f1" {
			t.Errorf("delivery %d: attempt %d, id %q", i, m.Attempt, m.ID)
		}
		if i > 0 && failing.at[i].Sub(failing.at[i-1]) < backoff {
			t.Errorf("attempt %d came %s after the previous, before the backoff", i+1, failing.at[i].Sub(failing.at[i-1]))
		}
	}
	failing.mu.Unlock()

	// A second action on the same consumer: handled once more, and the
	// first was not handled again meanwhile.
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/pay", 3), "u1.p2")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := paid.len(); n != 2 {
			return fmt.Errorf("handled %d times, want 2", n)
		}
		return streamHolds(st, 0)
	})
	paid.mu.Lock()
	for i, m := range paid.seen {
		if want := fmt.Sprintf("p%d", i+1); m.ID != want || m.Attempt != 1 || m.Action != "shop/pay" {
			t.Errorf("message %d: %s id %q attempt %d, want id %s attempt 1", i, m.Action, m.ID, m.Attempt, want)
		}
	}
	paid.mu.Unlock()
	if n, _, _ := dead.Pending(); n != 0 {
		t.Fatalf("%d more dead letters", n)
	}
	for _, key := range []string{"shop/pay created", "shop/fail created"} {
		if n := events.get(key); n != 1 {
			t.Errorf("hook %s: %d, want 1", key, n)
		}
	}
}

// Actions stored while no dispatcher ran are each handled once when one
// starts: by the longest prefix, or by their own handler. Mutations that
// fail it: no look at the stream at Start (nothing handled), the shortest
// prefix winning, a prefix consumer for an exact action (Start fails: two
// consumers filter it), or one for an action under no prefix.
func TestReliablePrefix_StoredBeforeStartHandledOnce(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	want := map[string][]int{}
	for i, action := range []string{"shop/pay", "shop/cart/add", "shop/special", "shop/pay", "shop/cart/add", "shop/pay"} {
		natstest.PublishReliable(t, edge, "ws", natstest.Envelope(action, i), fmt.Sprintf("u1.m%d", i))
		name := map[string]string{"shop/pay": "shop/", "shop/cart/add": "shop/cart/", "shop/special": "exact"}[action]
		want[name+" "+action] = append(want[name+" "+action], i)
	}
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("other", 9), "u1.o1")

	c := newTally()
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second}, reliableService{
		exact:    map[string]dispatcher.HandlerFunc{"shop/special": c.handler("exact")},
		prefixes: map[string]dispatcher.HandlerFunc{"shop/": c.handler("shop/"), "shop/cart/": c.handler("shop/cart/")},
	})
	// The action under no prefix stays for whoever handles it.
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := c.check(want); err != nil {
			return err
		}
		return streamHolds(st, 1)
	})
}

// Two replicas in one queue group share each action's consumer: every
// numbered action, stored before they start or while they run, is handled
// once. Mutations that fail it: a consumer name that differs per replica
// (each replica gets every action), or a signal subscription in a queue
// group that handles its messages.
func TestReliablePrefix_TwoReplicasHandleEachActionOnce(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	actions := []string{"app/a", "app/b", "app/c/d", "app/e"}
	const n = 80
	var numbers []int
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			natstest.PublishReliable(t, edge, "ws", natstest.Envelope(actions[i%len(actions)], i), fmt.Sprintf("u1.n%d", i))
			numbers = append(numbers, i)
		}
	}
	publish(0, n/2)
	c := newTally()
	for range 2 {
		startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second},
			reliableService{prefixes: map[string]dispatcher.HandlerFunc{"app/": c.handler("app/")}},
			dispatcher.WithQueue("workers"))
	}
	publish(n/2, n)
	want := map[string][]int{}
	for _, i := range numbers {
		key := "app/ " + actions[i%len(actions)]
		want[key] = append(want[key], i)
	}
	natstest.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if err := c.check(want); err != nil {
			return err
		}
		return streamHolds(st, 0)
	})
}

// An action another, prefix-less service handles keeps its consumer: a
// prefix covering it leaves it alone, at Start and while running, and
// still takes the others; an action with a handler of its own in the same
// dispatcher goes to that handler. Mutations that fail it: failing Start
// when another consumer filters an action, replacing that consumer, or
// retrying the creation at each message (the hook counts it once).
func TestReliablePrefix_LeavesOtherServicesConsumersAlone(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	c := newTally()
	billing := reliableService{exact: map[string]dispatcher.HandlerFunc{"shop/invoice": c.handler("billing")}}

	// The billing service made its consumer and is down while an invoice
	// is stored: the shop's Start finds it in the stream.
	_, drainBilling := startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second}, billing, dispatcher.WithQueue("billing"))
	drainBilling()
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/invoice", 1), "u1.i1")

	events := newPrefixEvents()
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second}, reliableService{
		exact:    map[string]dispatcher.HandlerFunc{"shop/special": c.handler("exact")},
		prefixes: map[string]dispatcher.HandlerFunc{"shop/": c.handler("shop/")},
	}, dispatcher.WithQueue("shop"), dispatcher.WithHooks(dispatcher.Hooks{PrefixConsumer: events.hook}))
	if n := events.get("shop/invoice taken"); n != 1 {
		t.Fatalf("hook shop/invoice taken: %d, want 1", n)
	}
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second}, billing, dispatcher.WithQueue("billing"))

	for i, action := range []string{"shop/invoice", "shop/special", "shop/pay", "shop/invoice"} {
		natstest.PublishReliable(t, edge, "ws", natstest.Envelope(action, 2+i), fmt.Sprintf("u1.a%d", i))
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := c.check(map[string][]int{
			"billing shop/invoice": {1, 2, 5}, "exact shop/special": {3}, "shop/ shop/pay": {4},
		}); err != nil {
			return err
		}
		return streamHolds(st, 0)
	})
	for key, want := range map[string]int{"shop/invoice taken": 1, "shop/invoice created": 0, "shop/special created": 0, "shop/pay created": 1} {
		if n := events.get(key); n != want {
			t.Errorf("hook %s: %d, want %d", key, n, want)
		}
	}
}

// A service with a handler of its own for an action that another service's
// prefix found first still starts, and takes the action over: the prefix's
// consumer is deleted, the prefix keeps its other actions; another Handle's
// consumer is never taken. Mutations that fail it: no take-over (Start
// fails: filtered consumer not unique), a take-over of any consumer.
func TestReliablePrefix_HandleOfAnotherServiceWinsOverAPrefix(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	c := newTally()
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second},
		reliableService{prefixes: map[string]dispatcher.HandlerFunc{"shop/": c.handler("shop/")}}, dispatcher.WithQueue("shop"))
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/invoice", 1), "u1.i1")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return c.check(map[string][]int{"shop/ shop/invoice": {1}})
	})
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second},
		reliableService{exact: map[string]dispatcher.HandlerFunc{"shop/invoice": c.handler("billing")}}, dispatcher.WithQueue("billing"))
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/invoice", 2), "u1.i2")
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/pay", 3), "u1.p3")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := c.check(map[string][]int{"shop/ shop/invoice": {1}, "billing shop/invoice": {2}, "shop/ shop/pay": {3}}); err != nil {
			return err
		}
		return streamHolds(st, 0)
	})

	// Only a prefix's consumer is taken over: a third service with its own
	// handler is refused, as two Handles of one action always were.
	third, err := dispatcher.New(natstest.Connect(t, ns), dispatcher.WithQueue("audit"),
		dispatcher.WithReliable(dispatcher.ReliableOptions{AckWait: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	handle(t, third, "shop/invoice", c.handler("audit"))
	if err := third.Start(context.Background()); err == nil {
		_ = third.Drain(context.Background())
		t.Fatal("a second Handle of shop/invoice took the first one's consumer")
	}
}

// Drain stops the consumers made while running like the others: an action
// stored after Drain is left for the next dispatcher, and ReliablePending
// counts it. Mutations that fail it: not draining those subscriptions (the
// drained dispatcher takes it, or delivers into its closed inbox and
// panics), ReliablePending without the found consumers.
func TestReliablePrefix_DrainStopsFoundConsumers(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	first, second := newTally(), newTally()
	svc := func(c *tally) reliableService {
		return reliableService{prefixes: map[string]dispatcher.HandlerFunc{"shop/": c.handler("shop/")}}
	}
	d, drain := startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second}, svc(first))
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/pay", 1), "u1.p1")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		return first.check(map[string][]int{"shop/ shop/pay": {1}})
	})
	drain()
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/pay", 2), "u1.p2")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return streamHolds(st, 1) })
	// The found consumer's pending action is reported like a Handle's.
	pending, err := d.ReliablePending(context.Background())
	if err != nil || len(pending) != 1 || pending["shop/pay"] != 1 {
		t.Fatalf("ReliablePending: %v, %v; want shop/pay: 1", pending, err)
	}
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second}, svc(second))
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if err := second.check(map[string][]int{"shop/ shop/pay": {2}}); err != nil {
			return err
		}
		return streamHolds(st, 0)
	})
	if err := first.check(map[string][]int{"shop/ shop/pay": {1}}); err != nil {
		t.Fatalf("drained dispatcher: %v", err)
	}
}

// Past MaxPrefixConsumers an action gets no consumer: it stays in the
// stream, and the hook says so. Mutation that fails it: no bound.
func TestReliablePrefix_BoundOnConsumers(t *testing.T) {
	ns := natstest.RunJetStream(t)
	edge := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	c := newTally()
	events := newPrefixEvents()
	startService(t, ns, dispatcher.ReliableOptions{AckWait: 5 * time.Second, MaxPrefixConsumers: 2},
		reliableService{prefixes: map[string]dispatcher.HandlerFunc{"shop/": c.handler("shop/")}},
		dispatcher.WithHooks(dispatcher.Hooks{PrefixConsumer: events.hook}))
	want := map[string][]int{}
	for i, action := range []string{"shop/a", "shop/b"} {
		natstest.PublishReliable(t, edge, "ws", natstest.Envelope(action, i), fmt.Sprintf("u1.b%d", i))
		want["shop/ "+action] = []int{i}
		natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error { return c.check(want) })
	}
	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/c", 2), "u1.b2")
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := events.get("shop/c limited"); n != 1 {
			return fmt.Errorf("hook shop/c limited: %d", n)
		}
		return nil
	})
	if err := streamHolds(st, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.check(want); err != nil {
		t.Fatal(err)
	}
}
