package inbound

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Sentinel errors of a publish; Result.Err wraps one of them.
var (
	// ErrUnavailable: the stream did not store the message (no stream, no
	// JetStream, no leader, or it answered an error).
	ErrUnavailable = errors.New("inbound: stream unavailable")
	// ErrTimeout: the stream did not answer within the publisher's timeout;
	// the message may or may not be stored (a resend with the same id is
	// recognised as a duplicate if it is).
	ErrTimeout = errors.New("inbound: no acknowledgement in time")
	// ErrClosed: the publisher is closed.
	ErrClosed = errors.New("inbound: publisher closed")
)

// Result is the stream's answer to one publish.
type Result struct {
	// Duplicate: the stream already had a message with this Nats-Msg-Id in
	// its dedupe window, and did not store it again.
	Duplicate bool
	// Err is nil when the message is stored (or was already).
	Err error
}

// Publisher publishes messages to the inbound stream without waiting for
// the stream. Each publish carries a reply subject under one wildcard
// subscription of the edge; the stream's acknowledgement, or its absence
// after the timeout, completes the publish through its callback.
//
// Why not jetstream.PublishMsgAsync: its futures have no completion
// callback, so each would need a goroutine (or the reader) to wait on it.
// Here the reader returns as soon as the message is handed to the NATS
// client, and completion runs on the reply subscription's goroutine, which
// only queues a frame (wsconn.Conn.Send never blocks). Callers bound how
// many publishes each connection may have in flight.
type Publisher struct {
	nc      *nats.Conn    // static after construction
	prefix  string        // static: reply subjects are prefix + token
	timeout time.Duration // static after construction
	sub     *nats.Subscription
	seq     atomic.Uint64

	acks   metric.Int64Counter         // static after construction
	byKind map[string]metric.AddOption // result attribute of acks; static after construction

	mu      sync.Mutex // guards the fields below
	pending map[string]*pending
	closed  bool
	drained chan struct{} // closed when pending empties during Close
}

// pending is one publish waiting for the stream.
type pending struct {
	done  func(Result)
	timer *time.Timer
}

// DefaultTimeout is how long a publish waits for the stream: long enough to
// ride out a stream leader election in a cluster.
const DefaultTimeout = 5 * time.Second

// NewPublisher subscribes the reply subjects on nc. meter (nil: none) gets
// wsgate.edge.inbound.acks{result}: stored, duplicate, unavailable, timeout.
func NewPublisher(nc *nats.Conn, timeout time.Duration, meter metric.Meter) (*Publisher, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	p := &Publisher{nc: nc, prefix: nc.NewInbox() + ".", timeout: timeout, pending: map[string]*pending{}}
	p.acks = telemetry.Must(meter.Int64Counter("wsgate.edge.inbound.acks",
		metric.WithDescription("Reliable inbound publishes by the stream's answer: stored, duplicate, unavailable, timeout, closed (edge shutting down).")))
	p.byKind = map[string]metric.AddOption{}
	for _, kind := range []string{"stored", "duplicate", "unavailable", "timeout", "closed"} {
		p.byKind[kind] = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", kind)))
	}
	sub, err := nc.Subscribe(p.prefix+"*", p.onReply)
	if err != nil {
		return nil, fmt.Errorf("inbound: subscribe acknowledgements: %w", err)
	}
	p.sub = sub
	return p, nil
}

// Publish sends msg, whose subject must be one of the stream's and whose
// header must hold its Nats-Msg-Id, and calls done once with the stream's
// answer, from another goroutine; done must not block. An error means msg
// was not sent and done will not be called.
func (p *Publisher) Publish(msg *nats.Msg, done func(Result)) error {
	token := strconv.FormatUint(p.seq.Add(1), 36)
	msg.Reply = p.prefix + token
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	pd := &pending{done: done}
	pd.timer = time.AfterFunc(p.timeout, func() { p.complete(token, Result{Err: ErrTimeout}) })
	p.pending[token] = pd
	p.mu.Unlock()
	if err := p.nc.PublishMsg(msg); err != nil {
		pd := p.take(token)
		if pd == nil {
			// The publish blocked past the timeout (a full NATS buffer is
			// flushed in the call), and done had its one call: ErrTimeout.
			return nil
		}
		pd.timer.Stop()
		return err
	}
	return nil
}

// Pending is how many publishes wait for the stream.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// Close stops the publisher: it refuses new publishes, waits until those
// in flight are answered or ctx is done, and completes the rest with
// ErrClosed. Call it once no connection publishes any more (the last
// Client/disconnection events are among those it waits for).
func (p *Publisher) Close(ctx context.Context) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if len(p.pending) > 0 {
		p.drained = make(chan struct{})
	}
	drained := p.drained
	p.mu.Unlock()
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	p.mu.Lock()
	left := p.pending
	p.pending = map[string]*pending{}
	p.mu.Unlock()
	_ = p.sub.Unsubscribe() // fails only when the connection is closed: nothing to stop then
	for _, pd := range left {
		pd.timer.Stop()
		p.acks.Add(context.Background(), 1, p.byKind["closed"])
		pd.done(Result{Err: ErrClosed})
	}
}

// pubAck is the stream's answer to a publish.
type pubAck struct {
	Stream    string `json:"stream"`
	Duplicate bool   `json:"duplicate"`
	Error     *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error"`
}

// onReply completes the publish a reply is for; it runs on the
// subscription's goroutine.
func (p *Publisher) onReply(m *nats.Msg) {
	token := strings.TrimPrefix(m.Subject, p.prefix)
	var res Result
	var ack pubAck
	switch {
	case m.Header.Get("Status") == "503":
		// No responders: nothing stores the subject (no stream, no JetStream).
		res.Err = fmt.Errorf("%w: no stream stores the subject", ErrUnavailable)
	case json.Unmarshal(m.Data, &ack) != nil:
		res.Err = fmt.Errorf("%w: not an acknowledgement", ErrUnavailable)
	case ack.Error != nil:
		res.Err = fmt.Errorf("%w: %d %s", ErrUnavailable, ack.Error.Code, ack.Error.Description)
	case ack.Stream == "":
		res.Err = fmt.Errorf("%w: acknowledgement names no stream", ErrUnavailable)
	default:
		res.Duplicate = ack.Duplicate
	}
	p.complete(token, res)
}

// complete calls the callback of token's publish, if it still waits.
func (p *Publisher) complete(token string, res Result) {
	pd := p.take(token)
	if pd == nil {
		return // answered late, after its timeout
	}
	pd.timer.Stop()
	result := "stored"
	switch {
	case errors.Is(res.Err, ErrTimeout):
		result = "timeout"
	case res.Err != nil:
		result = "unavailable"
	case res.Duplicate:
		result = "duplicate"
	}
	p.acks.Add(context.Background(), 1, p.byKind[result])
	pd.done(res)
}

func (p *Publisher) take(token string) *pending {
	p.mu.Lock()
	defer p.mu.Unlock()
	pd := p.pending[token]
	delete(p.pending, token)
	if p.drained != nil && len(p.pending) == 0 {
		close(p.drained)
		p.drained = nil
	}
	return pd
}

// PublishEvent publishes a lifecycle event's envelope (Client/authentication,
// Client/disconnection, and the presence events) through the stream, with
// msgID as its Nats-Msg-Id so that each event is stored, and so handled,
// once however often it is published. msg's subject is the core subject
// <prefix>.in.<action>; inq is <prefix>.inq.<action>. When the stream
// certainly did not store it (no stream), the event goes to core NATS
// instead, as it would with the stream off; after a timeout it does not,
// since the stream may have stored it. failed (may be nil) is told about an
// event that reached neither; it must not block.
func (p *Publisher) PublishEvent(msg *nats.Msg, inq, msgID string, failed func(error)) error {
	core := &nats.Msg{Subject: msg.Subject, Data: msg.Data, Header: nats.Header{}}
	for k, v := range msg.Header {
		core.Header[k] = v
	}
	msg.Subject = inq
	msg.Header.Set("Nats-Msg-Id", msgID)
	return p.Publish(msg, func(r Result) {
		if !errors.Is(r.Err, ErrUnavailable) {
			if r.Err != nil && failed != nil {
				failed(r.Err)
			}
			return
		}
		if err := p.nc.PublishMsg(core); err != nil && failed != nil {
			failed(err)
		}
	})
}
