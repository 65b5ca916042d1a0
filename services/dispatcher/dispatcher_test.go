package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// handled is what the Handled hook reports.
type handled struct {
	action  string
	outcome dispatcher.Outcome
}

// harness is one NATS server, an "edge" connection that publishes envelopes
// and captures what reaches clients, and a started dispatcher on its own
// connection.
type harness struct {
	srv     *server.Server
	edge    *nats.Conn
	dnc     *nats.Conn // the dispatcher's connection
	capture *natstest.Capture
	d       *dispatcher.Dispatcher
	handled chan handled
	decodes atomic.Int64
}

// start starts a dispatcher with the handlers register adds; it is drained
// when the test ends.
func start(t *testing.T, register func(*dispatcher.Dispatcher), opts ...dispatcher.Option) *harness {
	t.Helper()
	h := &harness{srv: natstest.RunServer(t), handled: make(chan handled, 1024)}
	h.edge = natstest.Connect(t, h.srv)
	h.dnc = natstest.Connect(t, h.srv)
	h.capture = natstest.Subscribe(t, h.edge, prefixOf(opts))
	hooks := dispatcher.WithHooks(dispatcher.Hooks{
		Handled: func(action string, o dispatcher.Outcome, _ time.Duration) {
			h.handled <- handled{action, o}
		},
		DecodeFailed: func(string, error) { h.decodes.Add(1) },
	})
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := dispatcher.New(h.dnc, append([]dispatcher.Option{dispatcher.WithLogger(logger), hooks}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	register(d)
	if err := d.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Wait)
		defer cancel()
		if err := d.Drain(ctx); err != nil {
			t.Errorf("Drain: %v", err)
		}
	})
	h.d = d
	return h
}

// prefixOf is the subject prefix that opts set (DefaultPrefix if none), so
// the capture listens where the dispatcher replies.
func prefixOf(opts []dispatcher.Option) string {
	o := dispatcher.Options{Prefix: dispatcher.DefaultPrefix}
	for _, opt := range opts {
		_ = opt(&o)
	}
	return o.Prefix
}

// send publishes env as an edge does.
func (h *harness) send(t *testing.T, env wire.Envelope) {
	t.Helper()
	natstest.Publish(t, h.edge, prefixOf(nil), env)
}

// waitInFlight waits until exactly n handlers are running.
func (h *harness) waitInFlight(t *testing.T, n int) {
	t.Helper()
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		if c := h.d.InFlight(); c != n {
			return fmt.Errorf("%d in flight, want %d", c, n)
		}
		return nil
	})
}

// waitHandled waits until the next handler has finished (error reply sent).
func (h *harness) waitHandled(t *testing.T) handled {
	t.Helper()
	select {
	case r := <-h.handled:
		return r
	case <-time.After(natstest.Wait):
		t.Fatal("no handler finished")
		return handled{}
	}
}

// testWriter sends the dispatcher's logs to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func handle(t *testing.T, d *dispatcher.Dispatcher, action string, f dispatcher.HandlerFunc) {
	t.Helper()
	if err := d.Handle(action, f); err != nil {
		t.Fatalf("Handle(%q): %v", action, err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	nc := natstest.Connect(t, natstest.RunServer(t))
	tests := []struct {
		name string
		nc   *nats.Conn
		opt  dispatcher.Option
		want error
	}{
		{"nil connection", nil, dispatcher.WithQueue("q"), dispatcher.ErrNilConn},
		{"zero concurrency", nc, dispatcher.WithConcurrency(0), dispatcher.ErrInvalidOption},
		{"empty queue", nc, dispatcher.WithQueue(""), dispatcher.ErrInvalidOption},
		{"queue with space", nc, dispatcher.WithQueue("a b"), dispatcher.ErrInvalidOption},
		{"prefix with empty token", nc, dispatcher.WithPrefix("a..b"), dispatcher.ErrInvalidOption},
		{"prefix of two tokens (the edges take one)", nc, dispatcher.WithPrefix("acme.ws"), dispatcher.ErrInvalidOption},
		{"prefix with wildcard", nc, dispatcher.WithPrefix("ws.*"), dispatcher.ErrInvalidOption},
		{"nil logger", nc, dispatcher.WithLogger(nil), dispatcher.ErrInvalidOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := dispatcher.New(tt.nc, tt.opt); !errors.Is(err, tt.want) {
				t.Fatalf("New: got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestHandleRejectsInvalidActions(t *testing.T) {
	d, err := dispatcher.New(natstest.Connect(t, natstest.RunServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, *dispatcher.Message) error { return nil }
	for _, action := range []string{"", "a.b", "a*", ">", "a b", "tab\t", strings.Repeat("a", 129)} {
		t.Run(fmt.Sprintf("%.20q", action), func(t *testing.T) {
			if err := d.Handle(action, ok); !errors.Is(err, dispatcher.ErrInvalidAction) {
				t.Fatalf("Handle: got %v, want ErrInvalidAction", err)
			}
		})
	}
	if err := d.Handle("a", nil); !errors.Is(err, dispatcher.ErrNilHandler) {
		t.Fatalf("Handle(nil): got %v, want ErrNilHandler", err)
	}
	if len(d.Actions()) != 0 {
		t.Fatalf("refused actions were registered: %v", d.Actions())
	}
}

func TestHandleRejectsDuplicateAction(t *testing.T) {
	d, err := dispatcher.New(natstest.Connect(t, natstest.RunServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, *dispatcher.Message) error { return nil }
	handle(t, d, "echo", ok)
	if err := d.Handle("echo", ok); !errors.Is(err, dispatcher.ErrDuplicateAction) {
		t.Fatalf("second Handle: got %v, want ErrDuplicateAction", err)
	}
}

func TestStartWithoutHandlersFails(t *testing.T) {
	d, err := dispatcher.New(natstest.Connect(t, natstest.RunServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); !errors.Is(err, dispatcher.ErrNoHandlers) {
		t.Fatalf("Start: got %v, want ErrNoHandlers", err)
	}
}

func TestHandleAndStartAfterStartOrDrainFail(t *testing.T) {
	ok := func(context.Context, *dispatcher.Message) error { return nil }
	h := start(t, func(d *dispatcher.Dispatcher) { handle(t, d, "a", ok) })
	if err := h.d.Handle("b", ok); !errors.Is(err, dispatcher.ErrStarted) {
		t.Fatalf("Handle after Start: got %v, want ErrStarted", err)
	}
	if err := h.d.Start(t.Context()); !errors.Is(err, dispatcher.ErrStarted) {
		t.Fatalf("second Start: got %v, want ErrStarted", err)
	}
	if err := h.d.Drain(t.Context()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if err := h.d.Handle("b", ok); !errors.Is(err, dispatcher.ErrClosed) {
		t.Fatalf("Handle after Drain: got %v, want ErrClosed", err)
	}
	if err := h.d.Start(t.Context()); !errors.Is(err, dispatcher.ErrClosed) {
		t.Fatalf("Start after Drain: got %v, want ErrClosed", err)
	}
}

func TestQueueGroupHandlesEachMessageOnce(t *testing.T) {
	const n = 200
	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	var (
		mu    sync.Mutex
		seen  = map[string]int{} // ref → times handled
		byDsp [2]int
	)
	for i := range byDsp {
		d, err := dispatcher.New(natstest.Connect(t, srv), dispatcher.WithQueue("workers"))
		if err != nil {
			t.Fatal(err)
		}
		handle(t, d, "work", func(_ context.Context, m *dispatcher.Message) error {
			mu.Lock()
			seen[string(m.Ref)]++
			byDsp[i]++
			mu.Unlock()
			return nil
		})
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
		natstest.Publish(t, edge, "", natstest.Envelope("work", i))
	}
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if total := byDsp[0] + byDsp[1]; total != n {
			return fmt.Errorf("handled %d of %d", total, n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("%d distinct messages handled, want %d", len(seen), n)
	}
	for ref, times := range seen {
		if times != 1 {
			t.Errorf("ref %s handled %d times", ref, times)
		}
	}
	t.Logf("split between the two dispatchers: %v", byDsp)
}

func TestConcurrencyBoundIsRespected(t *testing.T) {
	const limit, n = 3, 12
	var cur, peak atomic.Int64
	release := make(chan struct{})
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "slow", func(context.Context, *dispatcher.Message) error {
			c := cur.Add(1)
			for p := peak.Load(); c > p && !peak.CompareAndSwap(p, c); p = peak.Load() {
			}
			<-release
			cur.Add(-1)
			return nil
		})
	}, dispatcher.WithConcurrency(limit))
	for range n {
		h.send(t, natstest.Envelope("slow", nil))
	}
	h.waitInFlight(t, limit)
	close(release)
	for range n {
		h.waitHandled(t)
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("at most %d handlers ran at once, want exactly %d", p, limit)
	}
}

func TestMessagesCostNoGoroutineOfTheirOwn(t *testing.T) {
	const limit, n = 4, 200
	release := make(chan struct{})
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "slow", func(context.Context, *dispatcher.Message) error {
			<-release
			return nil
		})
	}, dispatcher.WithConcurrency(limit))
	before := runtime.NumGoroutine()
	for range n {
		h.send(t, natstest.Envelope("slow", nil))
	}
	h.waitInFlight(t, limit)
	if g := runtime.NumGoroutine(); g > before {
		t.Errorf("%d goroutines with %d handlers running and %d messages waiting, %d before any message", g, limit, n-limit, before)
	}
	close(release)
	for range n {
		h.waitHandled(t)
	}
}

func TestHandlerErrorRepliesInternalServerError(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "fail", func(context.Context, *dispatcher.Message) error {
			return errors.New("db: password=hunter2 rejected")
		})
	})
	env := natstest.Envelope("fail", "x")
	h.send(t, env)
	r := h.capture.Next(t)
	if r.Subject != "ws.send.conn."+natstest.Connection {
		t.Fatalf("subject %s, want ws.send.conn.%s", r.Subject, natstest.Connection)
	}
	if r.Outbound.Action != "fail:error" || string(r.Outbound.Ref) != string(env.Ref) {
		t.Fatalf("got %s, want action fail:error with ref %s", r.Data, env.Ref)
	}
	if e := natstest.ErrorDetails(t, r); e != (wire.Error{Code: 500, Message: "Internal Server Error"}) {
		t.Fatalf("details %+v, want [500, Internal Server Error]", e)
	}
	if got := h.waitHandled(t); got.outcome != dispatcher.OutcomeError {
		t.Fatalf("outcome %s, want error", got.outcome)
	}
}

func TestDispatcherErrorRepliesItsCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want wire.Error
	}{
		{"NewError", dispatcher.NewError(404, "no such room"), wire.Error{Code: 404, Message: "no such room"}},
		{"wrapped NewError", fmt.Errorf("join: %w", dispatcher.NewError(409, "taken")), wire.Error{Code: 409, Message: "taken"}},
		{"wire.Error", &wire.Error{Code: 403, Message: "not yours"}, wire.Error{Code: 403, Message: "not yours"}},
		{"code outside 400–599", dispatcher.NewError(200, "fine?"), wire.Error{Code: 500, Message: "Internal Server Error"}},
	}
	errs := make(chan error, 1)
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "refuse", func(context.Context, *dispatcher.Message) error { return <-errs })
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs <- tt.err
			h.send(t, natstest.Envelope("refuse", nil))
			r := h.capture.Next(t)
			if r.Outbound.Action != "refuse:error" {
				t.Fatalf("got %s, want refuse:error", r.Data)
			}
			if e := natstest.ErrorDetails(t, r); e != tt.want {
				t.Fatalf("details %+v, want %+v", e, tt.want)
			}
		})
	}
}

func TestDecodeErrorRepliesBadRequest(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "typed", func(_ context.Context, m *dispatcher.Message) error {
			var v struct{ N int }
			return m.Decode(&v)
		})
	})
	h.send(t, natstest.Envelope("typed", "not an object"))
	r := h.capture.Next(t)
	if e := natstest.ErrorDetails(t, r); e != (wire.Error{Code: 400, Message: "Invalid details"}) {
		t.Fatalf("details %+v, want [400, Invalid details]", e)
	}
}

func TestPanicRepliesInternalServerErrorAndKeepsServing(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "boom", func(_ context.Context, m *dispatcher.Message) error {
			if string(m.Details) == `"panic"` {
				panic("nil map write, say")
			}
			return m.Reply("boom", "fine")
		})
	})
	h.send(t, natstest.Envelope("boom", "panic"))
	r := h.capture.Next(t)
	if e := natstest.ErrorDetails(t, r); r.Outbound.Action != "boom:error" || e.Code != 500 || e.Message != "Internal Server Error" {
		t.Fatalf("got %s, want boom:error [500, Internal Server Error]", r.Data)
	}
	if got := h.waitHandled(t); got.outcome != dispatcher.OutcomePanic {
		t.Fatalf("outcome %s, want panic", got.outcome)
	}
	h.send(t, natstest.Envelope("boom", "again"))
	if r := h.capture.Next(t); r.Outbound.Action != "boom" || string(r.Outbound.Details) != `"fine"` {
		t.Fatalf("after the panic got %s, want the handler's reply", r.Data)
	}
}

func TestNoErrorReplyAfterHandlerReplied(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "half", func(_ context.Context, m *dispatcher.Message) error {
			if err := m.Reply("half", "partial"); err != nil {
				return err
			}
			return errors.New("failed after replying")
		})
	})
	h.send(t, natstest.Envelope("half", nil))
	if r := h.capture.Next(t); r.Outbound.Action != "half" {
		t.Fatalf("got %s, want the handler's reply", r.Data)
	}
	h.waitHandled(t)
	h.capture.Quiet(t, h.dnc)
}

func TestLifecycleActionsGetNoErrorReply(t *testing.T) {
	fail := func(context.Context, *dispatcher.Message) error { return errors.New("greeting failed") }
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, wire.ActionAuthentication, fail)
		handle(t, d, wire.ActionDisconnection, fail)
	})
	for _, action := range []string{wire.ActionAuthentication, wire.ActionDisconnection} {
		env := natstest.Envelope(action, nil)
		env.Ref = nil // lifecycle events come from the edge, without a ref
		h.send(t, env)
		if got := h.waitHandled(t); got.outcome != dispatcher.OutcomeError {
			t.Fatalf("%s: outcome %s, want error", action, got.outcome)
		}
	}
	h.capture.Quiet(t, h.dnc)
}

func TestReplyCarriesRef(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "ask", func(_ context.Context, m *dispatcher.Message) error {
			return m.Reply("answer", map[string]any{"q": m.Details})
		})
	})
	tests := []struct {
		name string
		ref  json.RawMessage
	}{
		{"integer", json.RawMessage(`42`)},
		{"string", json.RawMessage(`"req-7"`)},
		{"absent", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := natstest.Envelope("ask", "why")
			env.Ref = tt.ref
			h.send(t, env)
			r := h.capture.Next(t)
			if r.Subject != "ws.send.conn."+natstest.Connection || r.Outbound.Action != "answer" {
				t.Fatalf("got %s on %s", r.Data, r.Subject)
			}
			if string(r.Outbound.Ref) != string(tt.ref) {
				t.Fatalf("ref %s, want %s", r.Outbound.Ref, tt.ref)
			}
			if string(r.Outbound.Details) != `{"q":"why"}` {
				t.Fatalf("details %s", r.Outbound.Details)
			}
		})
	}
}

func TestReplyErrorSendsActionError(t *testing.T) {
	codeErr := make(chan error, 1)
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "book", func(_ context.Context, m *dispatcher.Message) error {
			codeErr <- m.ReplyError(200, "not an error code")
			return m.ReplyError(409, "already booked")
		})
	})
	env := natstest.Envelope("book", nil)
	h.send(t, env)
	r := h.capture.Next(t)
	if r.Outbound.Action != "book:error" || string(r.Outbound.Ref) != string(env.Ref) {
		t.Fatalf("got %s, want book:error with ref %s", r.Data, env.Ref)
	}
	if e := natstest.ErrorDetails(t, r); e != (wire.Error{Code: 409, Message: "already booked"}) {
		t.Fatalf("details %+v", e)
	}
	if err := <-codeErr; !errors.Is(err, dispatcher.ErrInvalidCode) {
		t.Fatalf("ReplyError(200): got %v, want ErrInvalidCode", err)
	}
	if got := h.waitHandled(t); got.outcome != dispatcher.OutcomeOK {
		t.Fatalf("outcome %s, want ok", got.outcome)
	}
	h.capture.Quiet(t, h.dnc)
}

func TestInvalidEnvelopeIsCountedNotFatal(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "echo", func(_ context.Context, m *dispatcher.Message) error {
			return m.Reply("echo", m.Details)
		})
	})
	wrongAction := natstest.Envelope("other", nil)
	noConn := natstest.Envelope("echo", nil)
	noConn.Connection = "no-dot"
	objectRef := natstest.Envelope("echo", nil)
	objectRef.Ref = json.RawMessage(`{"not":"a ref"}`)
	bad := [][]byte{
		[]byte("not json"),
		[]byte(`["echo", null]`),
		mustJSON(t, wrongAction),
		mustJSON(t, noConn),
		mustJSON(t, objectRef),
	}
	for _, data := range bad {
		natstest.PublishRaw(t, h.edge, "ws.in.echo", data)
	}
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		if n := h.decodes.Load(); n != int64(len(bad)) {
			return fmt.Errorf("%d decode failures counted, want %d", n, len(bad))
		}
		return nil
	})
	h.send(t, natstest.Envelope("echo", "still here"))
	if r := h.capture.Next(t); r.Outbound.Action != "echo" {
		t.Fatalf("got %s, want the echo (the bad envelopes get no reply)", r.Data)
	}
}

func TestDrainWaitsForInFlightHandlers(t *testing.T) {
	release := make(chan struct{})
	var finished atomic.Bool
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "long", func(context.Context, *dispatcher.Message) error {
			<-release
			finished.Store(true)
			return nil
		})
	})
	h.send(t, natstest.Envelope("long", nil))
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		if h.d.InFlight() != 1 {
			return errors.New("handler not running yet")
		}
		return nil
	})
	subs := h.srv.NumSubscriptions()
	drained := make(chan error, 1)
	go func() { drained <- h.d.Drain(context.Background()) }()
	// Once the server has lost the dispatcher's interest, Drain is under way.
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		if h.srv.NumSubscriptions() == subs {
			return errors.New("subscription not drained yet")
		}
		return nil
	})
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while a handler was running", err)
	default:
	}
	close(release)
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(natstest.Wait):
		t.Fatal("Drain did not return after the handler finished")
	}
	if !finished.Load() {
		t.Fatal("Drain returned before the handler finished")
	}
}

func TestDrainGivesUpAtContextAndCancelsHandlers(t *testing.T) {
	cancelled := make(chan struct{})
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "stuck", func(ctx context.Context, _ *dispatcher.Message) error {
			<-ctx.Done()
			close(cancelled)
			return ctx.Err()
		})
	})
	h.send(t, natstest.Envelope("stuck", nil))
	natstest.CheckFor(t, natstest.Wait, 5*time.Millisecond, func() error {
		if h.d.InFlight() != 1 {
			return errors.New("handler not running yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.d.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: got %v, want DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(natstest.Wait):
		t.Fatal("the handler's context was not cancelled")
	}
	h.waitHandled(t) // the handler goroutine is done before goleak looks
}

func TestPrefixChangesSubjects(t *testing.T) {
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "echo", func(_ context.Context, m *dispatcher.Message) error {
			return m.Reply("echo", m.Details)
		})
	}, dispatcher.WithPrefix("acme"))
	natstest.Publish(t, h.edge, "acme", natstest.Envelope("echo", 1))
	if r := h.capture.Next(t); r.Subject != "acme.send.conn."+natstest.Connection {
		t.Fatalf("reply on %s, want acme.send.conn.%s", r.Subject, natstest.Connection)
	}
}

func TestMessageExposesEnvelopeFields(t *testing.T) {
	got := make(chan *dispatcher.Message, 1)
	h := start(t, func(d *dispatcher.Dispatcher) {
		handle(t, d, "who", func(_ context.Context, m *dispatcher.Message) error {
			got <- m
			return nil
		})
	})
	env := natstest.Envelope("who", map[string]int{"n": 1})
	h.send(t, env)
	m := <-got
	h.waitHandled(t)
	if m.Action != env.Action || string(m.Details) != `{"n":1}` || string(m.Ref) != string(env.Ref) ||
		m.User != env.User || m.Session != env.Session || len(m.Groups) != 1 || m.Groups[0] != "g1" ||
		m.Language != env.Language || m.Connection != env.Connection || m.Edge != env.Edge ||
		m.IP != env.IP || m.UserAgent != env.UserAgent || !m.TS.Equal(env.TS) {
		t.Fatalf("message %+v does not match envelope %+v", m.Envelope, env)
	}
	if m.Sender() != h.d.Sender() {
		t.Fatal("Message.Sender is not the dispatcher's")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
