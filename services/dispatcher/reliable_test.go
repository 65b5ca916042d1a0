package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// attempts records the deliveries a handler saw.
type attempts struct {
	mu   sync.Mutex
	seen []*dispatcher.Message
	at   []time.Time
}

func (a *attempts) add(m *dispatcher.Message) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, m)
	a.at = append(a.at, time.Now())
}

func (a *attempts) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// startReliable starts a dispatcher with reliable inbound on nc, with the
// handlers of h, drained at cleanup.
func startReliable(t *testing.T, nc *nats.Conn, r dispatcher.ReliableOptions, h map[string]dispatcher.HandlerFunc, opts ...dispatcher.Option) *dispatcher.Dispatcher {
	t.Helper()
	d, err := dispatcher.New(nc, append([]dispatcher.Option{dispatcher.WithReliable(r)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	for action, f := range h {
		if err := d.Handle(action, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = d.Drain(ctx)
	})
	return d
}

// streamEmpty reports whether the inbound stream holds nothing: every
// action was acknowledged or removed.
func streamEmpty(st jetstream.Stream) error {
	info, err := st.Info(context.Background())
	if err != nil {
		return err
	}
	if info.State.Msgs != 0 {
		return fmt.Errorf("stream holds %d messages", info.State.Msgs)
	}
	return nil
}

// deadLetterEnv is a NATS server with the inbound stream, a subscription to
// every dead letter, and the capture of what is sent to clients.
func deadLetterEnv(t *testing.T) (*nats.Conn, jetstream.Stream, *nats.Subscription, *natstest.Capture) {
	t.Helper()
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	st := natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	dead, err := nc.SubscribeSync("ws.dead.>")
	if err != nil {
		t.Fatal(err)
	}
	return nc, st, dead, natstest.Subscribe(t, nc, "ws")
}

// nextDeadLetter returns the next dead letter on dead (deadLetterEnv's) and
// the subject it came on.
func nextDeadLetter(t *testing.T, dead *nats.Subscription) (string, dispatcher.DeadLetter) {
	t.Helper()
	msg, err := dead.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	var letter dispatcher.DeadLetter
	if err := json.Unmarshal(msg.Data, &letter); err != nil {
		t.Fatal(err)
	}
	return msg.Subject, letter
}

// Mutations that fail it: retrying without the backoff (attempts closer
// than 200ms), dead-lettering before MaxDeliver or never, Ack instead of
// Term after the dead letter (a second dead letter, or the stream keeps
// it), replying the error before the last attempt, and a consumer that
// waits on the failing action (ok handled after it is dead).
func TestReliable_FailingHandlerRetriedWithBackoffThenDeadLetter(t *testing.T) {
	nc, st, dead, capture := deadLetterEnv(t)

	var failing, ok attempts
	const backoff = 200 * time.Millisecond
	var (
		eventsMu sync.Mutex
		events   = map[string]int{}
	)
	startReliable(t, nc, dispatcher.ReliableOptions{MaxDeliver: 3, Backoff: []time.Duration{backoff}, AckWait: 5 * time.Second},
		map[string]dispatcher.HandlerFunc{
			"fail": func(_ context.Context, m *dispatcher.Message) error {
				failing.add(m)
				if m.Attempt == 2 {
					panic("second attempt panics")
				}
				return errors.New("database is down")
			},
			"ok": func(_ context.Context, m *dispatcher.Message) error { ok.add(m); return nil },
		},
		dispatcher.WithHooks(dispatcher.Hooks{Reliable: func(action string, ev dispatcher.ReliableEvent) {
			eventsMu.Lock()
			defer eventsMu.Unlock()
			events[action+"/"+string(ev)]++
		}}))

	env := natstest.Envelope("fail", "x")
	natstest.PublishReliable(t, nc, "ws", env, "u1.f1")
	for i := range 3 {
		natstest.PublishReliable(t, nc, "ws", natstest.Envelope("ok", i), fmt.Sprintf("u1.ok%d", i))
	}
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if ok.len() != 3 {
			return fmt.Errorf("ok handled %d times", ok.len())
		}
		return nil
	})
	if n := failing.len(); n >= 3 {
		t.Fatalf("ok actions waited for the failing one (%d attempts first)", n)
	}

	subject, letter := nextDeadLetter(t, dead)
	if subject != "ws.dead.fail" || letter.Attempts != 3 || letter.Error != "database is down" ||
		letter.MsgID != "u1.f1" || letter.Envelope.Action != "fail" || string(letter.Envelope.Ref) != string(env.Ref) {
		t.Fatalf("dead letter on %s: %+v", subject, letter)
	}
	failing.mu.Lock()
	if len(failing.seen) != 3 {
		t.Fatalf("handled %d times, want 3", len(failing.seen))
	}
	for i, m := range failing.seen {
		if m.Attempt != i+1 || m.ID != "f1" {
			t.Errorf("delivery %d: attempt %d, id %q", i, m.Attempt, m.ID)
		}
		if i > 0 && failing.at[i].Sub(failing.at[i-1]) < backoff {
			t.Errorf("attempt %d came %s after the previous, before the %s backoff", i+1, failing.at[i].Sub(failing.at[i-1]), backoff)
		}
	}
	failing.mu.Unlock()

	// The client got one error reply, after the last attempt; nothing else.
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { return streamEmpty(st) })
	r := capture.Next(t)
	if r.Outbound.Action != "fail:error" || natstest.ErrorDetails(t, r).Code != 500 {
		t.Fatalf("got %s on %s, want fail:error [500]", r.Data, r.Subject)
	}
	capture.Quiet(t, nc)
	if n, _, _ := dead.Pending(); n != 0 {
		t.Fatalf("%d more dead letters", n)
	}
	for key, want := range map[string]int{"fail/retried": 2, "fail/dead": 1, "fail/redelivered": 2, "ok/acked": 3} {
		eventsMu.Lock()
		got := events[key]
		eventsMu.Unlock()
		if got != want {
			t.Errorf("hook %s: %d, want %d", key, got, want)
		}
	}
}

// TestReliable_OneQueueGroupPerAction: the inbound stream is a work queue,
// so a second queue group cannot consume a reliable action another one
// has; its Start says so, and names the way out, rather than a bare
// JetStream error code.
func TestReliable_OneQueueGroupPerAction(t *testing.T) {
	ns := natstest.RunJetStream(t)
	nc := natstest.Connect(t, ns)
	natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	noop := func(context.Context, *dispatcher.Message) error { return nil }
	r := dispatcher.ReliableOptions{MaxDeliver: 3, AckWait: 5 * time.Second}
	startReliable(t, nc, r, map[string]dispatcher.HandlerFunc{"Client/online": noop})
	d, err := dispatcher.New(nc, dispatcher.WithReliable(r), dispatcher.WithQueue("app"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Handle("Client/online", noop); err != nil {
		t.Fatal(err)
	}
	err = d.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `another queue group than "app" consumes it`) {
		t.Fatalf("Start: %v, want the work queue's rule explained", err)
	}
}

// TestReliable_FinalErrorIsNotRetried: a handler's failure marked Final
// (trying again could do twice what the first try did) is the client's
// error reply and a dead letter at once, with no retry. Fails when Final
// is treated as any failure (3 attempts).
func TestReliable_FinalErrorIsNotRetried(t *testing.T) {
	nc, st, dead, capture := deadLetterEnv(t)
	var seen attempts
	startReliable(t, nc, dispatcher.ReliableOptions{MaxDeliver: 3, Backoff: []time.Duration{50 * time.Millisecond}, AckWait: 5 * time.Second},
		map[string]dispatcher.HandlerFunc{
			"pay": func(_ context.Context, m *dispatcher.Message) error {
				seen.add(m)
				return dispatcher.Final(dispatcher.NewError(502, "the bank did not answer"))
			},
		})
	natstest.PublishReliable(t, nc, "ws", natstest.Envelope("pay", 1), "u1.p1")
	nextDeadLetter(t, dead)
	r := capture.Next(t)
	if e := natstest.ErrorDetails(t, r); r.Outbound.Action != "pay:error" || e.Code != 502 || e.Message != "the bank did not answer" {
		t.Fatalf("got %s, want pay:error [502, the bank did not answer]", r.Data)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { return streamEmpty(st) })
	capture.Quiet(t, nc)
	if n := seen.len(); n != 1 {
		t.Fatalf("handled %d times, want once", n)
	}
}

// TestReliable_NoAnswerOnTheLastAttemptIsRepliedAndDeadLettered: the last
// delivery of a reliable action gets no answer (its dispatcher was killed,
// or the handler outran the ack wait). When the stream delivers it again,
// the action goes to the dead-letter subject and the client gets its error
// reply, as after a last failure (README: "the client gets the error
// reply"). Fails when the no-answer path only writes the dead letter.
func TestReliable_NoAnswerOnTheLastAttemptIsRepliedAndDeadLettered(t *testing.T) {
	nc, st, dead, capture := deadLetterEnv(t)
	stuck := make(chan struct{})
	var seen attempts
	startReliable(t, nc, dispatcher.ReliableOptions{MaxDeliver: 1, AckWait: time.Second},
		map[string]dispatcher.HandlerFunc{
			"slow": func(_ context.Context, m *dispatcher.Message) error {
				seen.add(m)
				<-stuck // as good as dead: never answers
				return nil
			},
		})
	t.Cleanup(func() { close(stuck) }) // runs before the dispatcher's drain
	natstest.PublishReliable(t, nc, "ws", natstest.Envelope("slow", 1), "u1.s1")

	subject, letter := nextDeadLetter(t, dead)
	if subject != "ws.dead.slow" || letter.Attempts != 2 || letter.MsgID != "u1.s1" {
		t.Fatalf("dead letter on %s: %+v", subject, letter)
	}
	r := capture.Next(t)
	if r.Outbound.Action != "slow:error" || natstest.ErrorDetails(t, r).Code != 500 {
		t.Fatalf("got %s on %s, want slow:error [500]", r.Data, r.Subject)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { return streamEmpty(st) })
	if n := seen.len(); n != 1 {
		t.Fatalf("the handler ran %d times, want once (the second delivery is past MaxDeliver)", n)
	}
}

// Mutation that fails it: treating a 4xx *Error as a failure (retried,
// attempts > 1, or the stream keeps it).
func TestReliable_RefusalIsRepliedNotRetried(t *testing.T) {
	ns := natstest.RunJetStream(t)
	nc := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	capture := natstest.Subscribe(t, nc, "ws")
	var seen attempts
	startReliable(t, nc, dispatcher.ReliableOptions{MaxDeliver: 3, Backoff: []time.Duration{50 * time.Millisecond}, AckWait: 5 * time.Second},
		map[string]dispatcher.HandlerFunc{"refuse": func(_ context.Context, m *dispatcher.Message) error {
			seen.add(m)
			return dispatcher.NewError(409, "already booked")
		}})
	natstest.PublishReliable(t, nc, "ws", natstest.Envelope("refuse", 1), "u1.r1")
	r := capture.Next(t)
	if e := natstest.ErrorDetails(t, r); r.Outbound.Action != "refuse:error" || e.Code != 409 || r.Subject != "ws.send.session.s1" {
		t.Fatalf("got %s on %s", r.Data, r.Subject)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { return streamEmpty(st) })
	capture.Quiet(t, nc)
	if n := seen.len(); n != 1 {
		t.Fatalf("handled %d times", n)
	}
}

// Mutations that fail it: a consumer that is not durable or starts at new
// messages (DeliverNew: the stored actions are never handled), or a core
// path that drops Attempt/ID.
func TestReliable_StoredWhileNoDispatcherThenHandled(t *testing.T) {
	ns := natstest.RunJetStream(t)
	nc := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	for i := range 5 {
		natstest.PublishReliable(t, nc, "ws", natstest.Envelope("work", i), fmt.Sprintf("u1.w%d", i))
	}
	if natstest.PublishReliable(t, nc, "ws", natstest.Envelope("work", 0), "u1.w0") != true {
		t.Fatal("a resend in the window was not a duplicate")
	}
	capture := natstest.Subscribe(t, nc, "ws")
	var seen attempts
	startReliable(t, nc, dispatcher.ReliableOptions{AckWait: 5 * time.Second},
		map[string]dispatcher.HandlerFunc{"work": func(_ context.Context, m *dispatcher.Message) error {
			seen.add(m)
			return m.Reply("work/done", m.Details)
		}})
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if n := seen.len(); n != 5 {
			return fmt.Errorf("handled %d of 5", n)
		}
		return streamEmpty(st)
	})
	// Replies to reliable actions go to the session, with the ref.
	r := capture.Next(t)
	if r.Subject != "ws.send.session.s1" || r.Outbound.Action != "work/done" || len(r.Outbound.Ref) == 0 {
		t.Fatalf("reply %s on %s", r.Data, r.Subject)
	}
	// Core frames still reach the same handler, as attempt 1 without id.
	natstest.Publish(t, nc, "ws", natstest.Envelope("work", "core"))
	natstest.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if seen.len() != 6 {
			return errors.New("core frame not handled")
		}
		return nil
	})
	seen.mu.Lock()
	defer seen.mu.Unlock()
	if last := seen.seen[5]; last.ID != "" || last.Attempt != 1 {
		t.Fatalf("core message: id %q attempt %d", last.ID, last.Attempt)
	}
	if first := seen.seen[0]; first.ID == "" || first.Attempt != 1 {
		t.Fatalf("reliable message: id %q attempt %d", first.ID, first.Attempt)
	}
}

// Mutation that fails it: lifecycle events replied to the session like
// actions (the greeting goes to every tab), or their ID not taken from the
// Nats-Msg-Id.
func TestReliable_LifecycleEventRepliesToItsConnection(t *testing.T) {
	ns := natstest.RunJetStream(t)
	nc := natstest.Connect(t, ns)
	natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	capture := natstest.Subscribe(t, nc, "ws")
	ids := make(chan string, 1)
	startReliable(t, nc, dispatcher.ReliableOptions{AckWait: 5 * time.Second},
		map[string]dispatcher.HandlerFunc{"Client/authentication": func(_ context.Context, m *dispatcher.Message) error {
			ids <- m.ID
			return m.Reply("welcome", m.User)
		}})
	env := natstest.Envelope("Client/authentication", nil)
	env.Ref = nil
	natstest.PublishReliable(t, nc, "ws", env, natstest.Connection+".auth")
	r := capture.Next(t)
	if r.Subject != "ws.send.conn."+natstest.Connection || r.Outbound.Action != "welcome" {
		t.Fatalf("greeting %s on %s", r.Data, r.Subject)
	}
	if id := <-ids; id != "auth" {
		t.Fatalf("ID %q, want auth", id)
	}
}

// Drain lets a reliable handler in flight finish and acknowledges it, so a
// rolling restart hands nothing back to the stream. Mutation that fails
// it: settling a delivery only when the drain did not start (the stream
// keeps the action).
func TestReliable_DrainFinishesInFlightAndAcks(t *testing.T) {
	ns := natstest.RunJetStream(t)
	nc := natstest.Connect(t, ns)
	st := natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	started, release := make(chan struct{}), make(chan struct{})
	d, err := dispatcher.New(nc, dispatcher.WithReliable(dispatcher.ReliableOptions{AckWait: 30 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Handle("slow", func(context.Context, *dispatcher.Message) error {
		close(started)
		<-release
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	natstest.PublishReliable(t, nc, "ws", natstest.Envelope("slow", 1), "u1.s1")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	drained := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- d.Drain(ctx)
	}()
	// The drain waits for the handler: it has not returned while the
	// handler runs (the handler is released only after this).
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while a handler ran", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error { return streamEmpty(st) })
}
