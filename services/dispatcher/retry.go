package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsgate/wsgate/api/wire"
)

// ReliableEvent says what became of one delivery of a reliable action, for
// Hooks.Reliable.
type ReliableEvent string

// Events of a reliable delivery.
const (
	ReliableAcked       ReliableEvent = "acked"       // handled (nil or a refusal): removed from the stream
	ReliableRetried     ReliableEvent = "retried"     // failed: delivered again after the backoff
	ReliableDead        ReliableEvent = "dead"        // failed the last time: sent to <prefix>.dead.<action>
	ReliableRedelivered ReliableEvent = "redelivered" // a delivery after the first (a retry or a lost answer)
	ReliableDropped     ReliableEvent = "dropped"     // not an envelope: removed without a handler
)

// DeadLetter is what the dispatcher publishes on <prefix>.dead.<action> for
// a reliable action whose handler failed MaxDeliver times. Its Nats-Msg-Id
// header is the action's, so a stream that keeps dead letters stores each
// once.
type DeadLetter struct {
	Envelope wire.Envelope `json:"envelope"`
	// Error is the last attempt's error text (operators only: it never
	// reaches the client), or why no attempt answered.
	Error string `json:"error"`
	// Attempts is how many times the action was delivered.
	Attempts int `json:"attempts"`
	// MsgID is the action's Nats-Msg-Id: "<user>.<id>", or
	// "<edge>.<conn>.<id>" for an anonymous connection.
	MsgID string `json:"msg_id"`
	// Stream and Sequence locate the action in the inbound stream.
	Stream   string    `json:"stream"`
	Sequence uint64    `json:"sequence"`
	TS       time.Time `json:"ts"`
}

// errNoAnswer is the dead letter's error when the last delivery went to a
// dispatcher that never answered.
var errNoAnswer = errors.New("delivered without an answer (dispatcher killed or too slow for DISPATCHER_ACK_WAIT)")

// receiveReliable handles one delivery of a reliable action; it runs on a
// worker. Every path ends in exactly one of Ack, NakWithDelay or Term,
// except when the dispatcher gives up draining: then the delivery is
// released with Nak for another replica.
func (d *Dispatcher) receiveReliable(ctx context.Context, msg *nats.Msg, action string, h Handler) {
	r := d.opts.Reliable
	select {
	case <-d.stop:
		_ = msg.Nak() // best effort: unanswered, it comes back after AckWait anyway
		return
	default:
	}
	meta, err := msg.Metadata()
	if err != nil {
		d.log.WarnContext(remoteSpan(ctx, msg.Header), "dropped a reliable message without metadata", "subject", msg.Subject, "err", err)
		return // not from a consumer: nothing to acknowledge
	}
	attempt := int(meta.NumDelivered)
	if attempt > 1 {
		d.reliableHook(action, ReliableRedelivered)
	}
	m, err := d.decode(action, msg.Data)
	if err != nil {
		d.log.WarnContext(remoteSpan(ctx, msg.Header), "dropped an invalid envelope", "subject", msg.Subject, "err", err)
		if f := d.opts.Hooks.DecodeFailed; f != nil {
			f(msg.Subject, err)
		}
		d.settle(ctx, msg, action, (*nats.Msg).Term, ReliableDropped)
		return
	}
	m.header = msg.Header
	m.Attempt = attempt
	msgID := msg.Header.Get(wire.HeaderMsgID)
	m.ID = msgID[strings.LastIndexByte(msgID, '.')+1:]
	if attempt > r.MaxDeliver {
		// The last delivery got no answer: its dispatcher died, or the
		// handler outran the ack wait. The client is told, as after a last
		// failure (once: only when the dead letter is out).
		if d.dead(ctx, msg, m, meta, errNoAnswer) {
			d.fail(ctx, m, errNoAnswer, false)
		}
		return
	}
	d.inFlight.Add(1)
	defer d.inFlight.Add(-1)
	err = d.serveReliable(ctx, action, h, m)
	switch {
	case err == nil || refused(err):
		d.settle(ctx, msg, action, (*nats.Msg).Ack, ReliableAcked)
	case attempt >= r.MaxDeliver || errors.Is(err, ErrFinal):
		d.dead(ctx, msg, m, meta, err)
	default:
		delay := r.backoff(attempt)
		if err := msg.NakWithDelay(delay); err != nil {
			d.log.WarnContext(ctx, "reliable retry not requested; redelivered after the ack wait", "action", action, "err", err)
		}
		d.reliableHook(action, ReliableRetried)
	}
}

// settle answers the stream and tells the hook.
func (d *Dispatcher) settle(ctx context.Context, msg *nats.Msg, action string, answer func(*nats.Msg, ...nats.AckOpt) error, ev ReliableEvent) {
	if err := answer(msg); err != nil {
		d.log.WarnContext(ctx, "reliable answer to the stream failed; the action will be delivered again", "action", action, "err", err)
	}
	d.reliableHook(action, ev)
}

// serveReliable is serve for a reliable action: it returns the handler's
// error, and replies it to the client only when it is final (a refusal, or
// the last attempt).
func (d *Dispatcher) serveReliable(ctx context.Context, action string, h Handler, m *Message) error {
	ctx = remoteSpan(ctx, m.header)
	span := trace.SpanFromContext(ctx)
	if d.tracing {
		ctx, span = d.opts.Tracer.Start(ctx, "dispatcher handle "+action, trace.WithSpanKind(trace.SpanKindConsumer))
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
		if refused(err) || m.Attempt >= d.opts.Reliable.MaxDeliver || errors.Is(err, ErrFinal) {
			d.fail(ctx, m, err, panicked)
		} else {
			d.log.WarnContext(ctx, "reliable handler failed; retrying", "action", action, "connection", m.Connection,
				"user", m.User, "attempt", m.Attempt, "err", err)
		}
	}
	if f := d.opts.Hooks.Handled; f != nil {
		f(action, outcomeOf(err, panicked), took)
	}
	return err
}

// refused reports whether a handler's error is an answer rather than a
// failure: a 4xx *Error, or ErrBadDetails. Retrying would answer the same.
func refused(err error) bool {
	var we *Error
	if errors.As(err, &we) {
		return we.Code >= 400 && we.Code < 500
	}
	return errors.Is(err, ErrBadDetails)
}

// dead publishes the dead letter of m and removes the action from the
// stream, and reports whether it did. If the dead letter cannot be
// published the action stays (Nak) and comes back, so it is never lost
// silently.
func (d *Dispatcher) dead(ctx context.Context, msg *nats.Msg, m *Message, meta *nats.MsgMetadata, cause error) bool {
	letter := DeadLetter{
		Envelope: m.Envelope, Error: cause.Error(), Attempts: int(meta.NumDelivered),
		MsgID: msg.Header.Get(wire.HeaderMsgID), Stream: meta.Stream, Sequence: meta.Sequence.Stream,
		TS: time.Now().UTC(),
	}
	data, err := json.Marshal(letter)
	if err == nil {
		out := &nats.Msg{Subject: d.subjects.Dead(m.Action), Data: data, Header: nats.Header{}}
		out.Header.Set(wire.HeaderMsgID, letter.MsgID)
		err = d.nc.PublishMsg(out)
	}
	if err != nil {
		d.log.ErrorContext(ctx, "dead letter not published; the action stays in the stream", "action", m.Action, "err", err)
		_ = msg.NakWithDelay(d.opts.Reliable.backoff(letter.Attempts))
		return false
	}
	d.log.ErrorContext(ctx, "reliable action failed for the last time; sent to the dead-letter subject",
		"action", m.Action, "connection", m.Connection, "user", m.User, "attempts", letter.Attempts, "err", cause)
	d.settle(ctx, msg, m.Action, (*nats.Msg).Term, ReliableDead)
	return true
}

func (d *Dispatcher) reliableHook(action string, ev ReliableEvent) {
	if f := d.opts.Hooks.Reliable; f != nil {
		f(action, ev)
	}
}

// replyTarget sends a reply of m. A reliable action's reply goes to the
// client's session (or its user when it has none), with the request's ref:
// the handler may run after the connection that sent the action was
// replaced by a reconnect (the client resent it there), and the new
// connection must still get the answer; the client ignores refs it does not
// wait for. Anonymous connections have only their connection, and a
// lifecycle event's reply (a greeting on Client/authentication) is for the
// connection it is about.
func (m *Message) replyTarget(ctx context.Context, action string, details any) error {
	s := m.sender
	switch {
	case m.ID == "" || m.User == "" || strings.HasPrefix(m.Action, wire.ReservedClient):
		return s.ToConnection(ctx, m.Connection, action, details, m.Ref)
	case m.Session != "":
		if err := checkID("session", m.Session); err != nil {
			return err
		}
		data, err := encode(action, details, m.Ref, nil)
		if err != nil {
			return err
		}
		return s.publish(ctx, s.subjects.SendSession(m.Session), data)
	default:
		if err := checkID("user", m.User); err != nil {
			return err
		}
		data, err := encode(action, details, m.Ref, nil)
		if err != nil {
			return err
		}
		return s.publish(ctx, s.subjects.SendUser(m.User), data)
	}
}
