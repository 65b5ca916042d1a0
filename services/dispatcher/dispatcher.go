// Package dispatcher is the handler SDK of wsgate (DESIGN.md §5): Go code
// that answers the actions browsers send through the edges.
//
// An edge publishes every client frame as an envelope on <prefix>.in.<action>.
// A Dispatcher subscribes to the actions it has handlers for, in one NATS
// queue group, so that however many replicas run, each message is handled
// once. Every subscription delivers into one channel, from which
// Concurrency workers run the handlers (so a message costs no goroutine of
// its own). A handler gets a *Message and answers with Message.Reply, or reaches
// any user, group, session or everyone with a Sender:
//
//	d, err := dispatcher.New(nc)
//	...
//	err = d.Handle("echo", func(ctx context.Context, m *dispatcher.Message) error {
//		return m.Reply("echo", m.Details)
//	})
//	...
//	err = d.Start(ctx)
//	...
//	defer d.Drain(ctx)
//
// A handler that returns an error, without having replied, makes the client
// get ["<action>:error", [code, message]]: the code and message of an *Error,
// or [500, "Internal Server Error"] for any other error or a panic, whose
// text is only logged. Lifecycle events (Client/authentication,
// Client/disconnection) never get an error reply: their connection may be
// gone.
package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// flushTimeout bounds Start's wait for the server to confirm the
// subscriptions when Start's ctx has no deadline of its own.
const flushTimeout = 5 * time.Second

// inboxSize is the capacity of the channel every subscription delivers into:
// the messages waiting for a free worker, as many as NATS lets one
// subscription hold by default. Beyond it NATS drops messages and reports a
// slow consumer through the connection's error handler; it never blocks the
// connection's reader. The channel's memory is touched only as far as a
// backlog reaches.
const inboxSize = nats.DefaultSubPendingMsgsLimit

// Handler handles the messages of one action. A returned error becomes an
// error reply to the client (see the package documentation).
type Handler interface {
	HandleMessage(ctx context.Context, m *Message) error
}

// HandlerFunc is a function used as a Handler. Dispatcher.Handle takes one,
// so a function literal can be passed as is; a Handler h is registered as
// d.Handle(action, h.HandleMessage).
type HandlerFunc func(ctx context.Context, m *Message) error

// HandleMessage calls f(ctx, m).
func (f HandlerFunc) HandleMessage(ctx context.Context, m *Message) error { return f(ctx, m) }

var _ Handler = HandlerFunc(nil)

// state is where a Dispatcher is in its life: idle → started → closed.
type state int

const (
	stateIdle state = iota
	stateStarted
	stateClosed
)

// Dispatcher runs handlers for the actions published by the edges. Register
// handlers with Handle, then Start; Drain stops it. Its methods are safe for
// concurrent use.
type Dispatcher struct {
	nc       *nats.Conn    // static after construction
	opts     Options       // static after construction
	subjects wire.Subjects // static after construction
	sender   *Sender       // static after construction
	log      *slog.Logger  // static after construction
	tracing  bool          // static: opts.Tracer records spans (it is not a no-op)

	// stop is closed when Drain gives up, so that the workers drop the
	// messages still waiting instead of handling them.
	stop     chan struct{}
	inFlight atomic.Int64 // handlers running now, for InFlight

	mu       sync.Mutex // guards the fields below
	state    state
	handlers map[string]Handler // frozen once started
	prefixes map[string]Handler // frozen once started; see HandlePrefix
	subs     []subscription     // set by Start (and grown by prefixInq), taken by Drain
	inbox    chan *nats.Msg     // every subscription delivers here; set by Start, closed by Drain
	idle     <-chan struct{}    // closed when every worker has exited; set by Start
	cancel   context.CancelFunc // cancels the handlers' context; set by Start
	// prefixInq consumes the reliable actions under the prefixes; set by
	// Start with WithReliable and a prefix, stopped by Drain.
	prefixInq *prefixConsumers
}

// subscription is one action's queue subscription.
type subscription struct {
	sub  *nats.Subscription
	done chan struct{} // closed once sub delivers no more
}

// New returns a Dispatcher on nc with the default Options changed by opts.
// The caller keeps ownership of nc: Drain does not close it.
func New(nc *nats.Conn, opts ...Option) (*Dispatcher, error) {
	if nc == nil {
		return nil, ErrNilConn
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	_, noop := o.Tracer.(tracenoop.Tracer)
	return &Dispatcher{
		tracing:  !noop,
		nc:       nc,
		opts:     o,
		subjects: wire.NewSubjects(o.Prefix),
		sender:   NewSender(nc, o.Prefix, senderOptions(o)...),
		log:      o.Logger,
		stop:     make(chan struct{}),
		handlers: make(map[string]Handler),
		prefixes: make(map[string]Handler),
	}, nil
}

// Handle registers h for action; it must be called before Start. action must
// be a valid action (wire.ValidateAction) with no handler yet.
func (d *Dispatcher) Handle(action string, h HandlerFunc) error {
	if err := wire.ValidateAction(action); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidAction, err)
	}
	if h == nil {
		return fmt.Errorf("%w: %s", ErrNilHandler, action)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkIdle(); err != nil {
		return err
	}
	if _, dup := d.handlers[action]; dup {
		return fmt.Errorf("%w: %s", ErrDuplicateAction, action)
	}
	d.handlers[action] = h
	return nil
}

// Actions returns the actions that have a handler, in no particular order.
func (d *Dispatcher) Actions() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	actions := make([]string, 0, len(d.handlers))
	for a := range d.handlers {
		actions = append(actions, a)
	}
	return actions
}

// Sender returns the Sender the dispatcher's messages use.
func (d *Dispatcher) Sender() *Sender { return d.sender }

// InFlight returns how many handlers are running now.
func (d *Dispatcher) InFlight() int { return int(d.inFlight.Load()) }

// Start subscribes every registered action, in the queue group (and, once a
// prefix is registered, every action: see HandlePrefix), and returns once the
// NATS server has confirmed the subscriptions, so that a message published
// after Start returns is handled. On error nothing stays subscribed and Start
// may be called again (e.g. once NATS is reachable).
//
// Handlers get a context that carries ctx's values but is cancelled only when
// Drain gives up waiting for them, so that cancelling ctx (e.g. on SIGTERM)
// lets in-flight handlers finish during Drain.
func (d *Dispatcher) Start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkIdle(); err != nil {
		return err
	}
	if len(d.handlers) == 0 && len(d.prefixes) == 0 {
		return ErrNoHandlers
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	plan := d.plan(hctx)
	reliable, prefixInq, err := d.planReliable(ctx, hctx)
	if err != nil {
		cancel()
		return err
	}
	plan = append(plan, reliable...)
	rt := &routes{static: make(map[string]nats.MsgHandler, len(plan))}
	for _, p := range plan {
		rt.static[p.subject] = p.cb
	}
	inbox := make(chan *nats.Msg, inboxSize)
	idle := d.startWorkers(inbox, rt)
	subs := make([]subscription, 0, len(plan))
	fail := func(err error) error {
		if prefixInq != nil {
			prefixInq.stop()
		}
		for _, s := range subs {
			_ = s.sub.Unsubscribe() // best effort: the error being returned matters more
		}
		// Nothing delivers any more: the workers handle what came in and exit.
		close(inbox)
		cancel()
		return err
	}
	for _, p := range plan {
		s, err := d.subscribe(p, inbox)
		if err != nil {
			return fail(err)
		}
		subs = append(subs, s)
	}
	fctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancelFlush context.CancelFunc
		fctx, cancelFlush = context.WithTimeout(ctx, flushTimeout)
		defer cancelFlush()
	}
	if err := d.nc.FlushWithContext(fctx); err != nil {
		return fail(fmt.Errorf("dispatcher: confirm subscriptions: %w", err))
	}
	d.subs, d.inbox, d.idle, d.cancel, d.state = subs, inbox, idle, cancel, stateStarted
	if prefixInq != nil {
		d.prefixInq = prefixInq
		prefixInq.run(rt, inbox)
	}
	return nil
}

// subscribe makes the subscription p, delivering into inbox.
func (d *Dispatcher) subscribe(p planned, inbox chan *nats.Msg) (subscription, error) {
	sub, err := d.nc.ChanQueueSubscribe(p.subject, p.queue, inbox)
	if err != nil {
		return subscription{}, fmt.Errorf("dispatcher: subscribe %s: %w", p.subject, err)
	}
	done := make(chan struct{})
	closeDone := sync.OnceFunc(func() { close(done) })
	sub.SetClosedHandler(func(string) { closeDone() })
	if !sub.IsValid() {
		closeDone() // closed before the handler was set
	}
	return subscription{sub: sub, done: done}, nil
}

// routes finds the callback of a delivered message by the subject of the
// subscription it came through.
type routes struct {
	static map[string]nats.MsgHandler // frozen at Start
	// dynamic holds the routes of the consumers prefixInq creates while
	// running (string → nats.MsgHandler); each is stored before its
	// subscription is made.
	dynamic sync.Map
}

// lookup returns the route of subject.
func (r *routes) lookup(subject string) (nats.MsgHandler, bool) {
	if cb, ok := r.static[subject]; ok {
		return cb, true
	}
	cb, ok := r.dynamic.Load(subject)
	if !ok {
		return nil, false
	}
	return cb.(nats.MsgHandler), true
}

// startWorkers starts Concurrency workers that run the handler of each
// message of inbox, found by its subscription's subject in rt, until inbox
// is closed and empty. The returned channel is closed when they all have
// exited.
func (d *Dispatcher) startWorkers(inbox <-chan *nats.Msg, rt *routes) <-chan struct{} {
	var wg sync.WaitGroup
	for range d.opts.Concurrency {
		wg.Go(func() {
			for msg := range inbox {
				if cb, ok := rt.lookup(msg.Sub.Subject); ok {
					cb(msg)
				}
			}
		})
	}
	idle := make(chan struct{})
	go func() { wg.Wait(); close(idle) }()
	return idle
}

// Drain stops the dispatcher: it drains the subscriptions (messages already
// received are still handled, no new ones come), then waits for every
// in-flight handler to finish. If ctx is done first, Drain drops the
// messages still waiting, cancels the handlers' context and returns ctx's
// error without waiting for handlers that ignore their context. Drain on a
// dispatcher that was never started just closes it; later calls return nil.
func (d *Dispatcher) Drain(ctx context.Context) error {
	d.mu.Lock()
	prev := d.state
	d.state = stateClosed
	subs, inbox, idle, cancel, prefixInq := d.subs, d.inbox, d.idle, d.cancel, d.prefixInq
	d.subs, d.inbox = nil, nil
	d.mu.Unlock()
	if prev != stateStarted {
		return nil
	}
	defer cancel()
	if prefixInq != nil {
		// It subscribes nothing once the state is closed; stopping it
		// waits for a consumer creation in progress.
		prefixInq.stop()
	}

	for _, s := range subs {
		// An error means the subscription or the connection is already
		// closed, which has closed done or will.
		if err := s.sub.Drain(); err != nil {
			d.log.Debug("subscription drain", "subject", s.sub.Subject, "err", err)
		}
	}
	for _, s := range subs {
		select {
		case <-s.done:
		case <-ctx.Done():
			return d.abort(ctx, subs, inbox)
		}
	}
	// No subscription delivers any more: the workers handle what is left
	// and exit, and then every handler has returned.
	close(inbox)
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return d.abort(ctx, nil, nil)
	}
}

// abort ends a Drain whose ctx is done; the caller cancels the handlers. It
// unsubscribes subs and closes inbox unless they are nil (already done).
func (d *Dispatcher) abort(ctx context.Context, subs []subscription, inbox chan *nats.Msg) error {
	close(d.stop)
	for _, s := range subs {
		_ = s.sub.Unsubscribe() // fails only if already closed, which is the goal
	}
	if inbox != nil {
		close(inbox) // the workers drop what is left and exit
	}
	d.log.Warn("dispatcher drain gave up; cancelling handlers", "in_flight", d.InFlight(), "err", ctx.Err())
	return fmt.Errorf("dispatcher: drain: %w", ctx.Err())
}

// checkIdle returns why handlers cannot be changed now; d.mu must be held.
func (d *Dispatcher) checkIdle() error {
	switch d.state {
	case stateStarted:
		return ErrStarted
	case stateClosed:
		return ErrClosed
	}
	return nil
}

// callback returns the route of action's messages; it runs on a worker.
func (d *Dispatcher) callback(ctx context.Context, action string, h Handler) nats.MsgHandler {
	return func(msg *nats.Msg) { d.receive(ctx, msg, action, h) }
}

// receive runs h on msg, published for action; it runs on a worker.
func (d *Dispatcher) receive(ctx context.Context, msg *nats.Msg, action string, h Handler) {
	select {
	case <-d.stop:
		d.log.WarnContext(remoteSpan(ctx, msg.Header), "dropped a message after drain gave up",
			"subject", msg.Subject)
		return
	default:
	}
	m, err := d.decode(action, msg.Data)
	if err != nil {
		d.log.WarnContext(remoteSpan(ctx, msg.Header), "dropped an invalid envelope", "subject", msg.Subject, "err", err)
		if f := d.opts.Hooks.DecodeFailed; f != nil {
			f(msg.Subject, err)
		}
		return
	}
	m.header = msg.Header
	m.Attempt = 1
	d.inFlight.Add(1)
	defer d.inFlight.Add(-1)
	d.serve(ctx, action, h, m)
}

// decode parses an inbound envelope and checks what the dispatcher relies on:
// the action it was published for, and a connection and ref it can reply to.
func (d *Dispatcher) decode(action string, data []byte) (*Message, error) {
	env, err := wire.DecodeEnvelope(data)
	if err != nil {
		return nil, err
	}
	m := &Message{Envelope: env, sender: d.sender}
	if m.Action != action {
		return nil, fmt.Errorf("action %q does not match the subject", m.Action)
	}
	if err := checkConnection(m.Connection); err != nil {
		return nil, err
	}
	if err := wire.ValidateRef(m.Ref); err != nil {
		return nil, err // a reply could not carry it back
	}
	if len(m.Details) == 0 {
		m.Details = json.RawMessage("null")
	}
	return m, nil
}

// serve runs one handler and answers its error, if any.
func (d *Dispatcher) serve(ctx context.Context, action string, h Handler, m *Message) {
	// Without tracing no span is built (a no-op one still costs
	// allocations); the edge's trace context, if any, still reaches the
	// handler and the reply.
	ctx = remoteSpan(ctx, m.header)
	span := trace.SpanFromContext(ctx)
	if d.tracing {
		ctx, span = d.opts.Tracer.Start(ctx, "dispatcher handle "+action, trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("wsgate.connection", m.Connection), attribute.String("wsgate.user", m.User)))
	}
	defer span.End()
	if sc := span.SpanContext(); sc.IsValid() {
		m.trace = trace.ContextWithSpanContext(context.Background(), sc)
	}
	start := time.Now()
	panicked, err := d.call(ctx, h, m)
	took := time.Since(start)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "handler failed")
	}
	if err != nil {
		d.fail(ctx, m, err, panicked)
	}
	if f := d.opts.Hooks.Handled; f != nil {
		f(action, outcomeOf(err, panicked), took)
	}
}

// call runs h, turning a panic into an error so the process never dies.
func (d *Dispatcher) call(ctx context.Context, h Handler, m *Message) (panicked bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			d.log.ErrorContext(ctx, "handler panicked", "action", m.Action, "connection", m.Connection, "user", m.User,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			panicked, err = true, fmt.Errorf("panic: %v", r)
		}
	}()
	return false, h.HandleMessage(ctx, m)
}

// fail answers a handler error: it logs it once, with ctx's trace, and,
// unless the handler already replied or the action is a lifecycle event,
// sends the error reply.
func (d *Dispatcher) fail(ctx context.Context, m *Message, err error, panicked bool) {
	attrs := []any{"action", m.Action, "connection", m.Connection, "user", m.User, "err", err}
	code, message := wire.CodeInternal, msgInternal
	var we *Error
	switch {
	case panicked:
		// Logged with its stack by call.
	case errors.As(err, &we) && wire.ValidErrorCode(we.Code):
		code, message = we.Code, we.Message
		d.log.DebugContext(ctx, "handler refused", attrs...)
	case errors.As(err, &we):
		d.log.ErrorContext(ctx, "handler returned an error code outside 400–599", attrs...)
	case errors.Is(err, ErrBadDetails):
		code, message = wire.CodeBadRequest, msgBadDetails
		d.log.DebugContext(ctx, "handler refused", attrs...)
	default:
		d.log.ErrorContext(ctx, "handler failed", attrs...)
	}
	if strings.HasPrefix(m.Action, wire.ReservedClient) || m.Replied() {
		return
	}
	if err := m.ReplyError(code, message); err != nil {
		d.log.WarnContext(ctx, "error reply failed", "action", m.Action, "connection", m.Connection, "err", err)
	}
}

// remoteSpan returns ctx with the edge's span context from the W3C trace
// headers of a message, if any: the parent of the handler's span, and what
// ties log lines about a message that is never handled to its trace.
func remoteSpan(ctx context.Context, h nats.Header) context.Context {
	return propagation.TraceContext{}.Extract(ctx, telemetry.NATSHeader(h))
}
