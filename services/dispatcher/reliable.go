package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of ReliableOptions (DISPATCHER_MAX_DELIVER, DISPATCHER_ACK_WAIT,
// DISPATCHER_RETRY_BACKOFF).
const (
	DefaultMaxDeliver = 5
	DefaultAckWait    = 30 * time.Second
	// DefaultStream is the inbound stream's default name (WS_INBOUND_STREAM).
	DefaultStream = "WS_INBOUND"
)

// DefaultBackoff is the default DISPATCHER_RETRY_BACKOFF.
var DefaultBackoff = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second}

// ReliableOptions make a Dispatcher consume reliable actions (DESIGN.md §8):
// the frames with a message id that the edges store in the inbound
// work-queue stream on <prefix>.inq.<action>.
type ReliableOptions struct {
	// Stream is the inbound stream's name (WS_INBOUND_STREAM); the edges
	// create it. Start fails (and may be retried) until it exists.
	Stream string
	// MaxDeliver is how many times an action is handled before it goes to
	// <prefix>.dead.<action>: failed attempts, and deliveries to a
	// dispatcher that died (or drained too late) without an answer.
	MaxDeliver int
	// Backoff[i] is the pause before delivery i+2 after a failed attempt;
	// the last one repeats.
	Backoff []time.Duration
	// AckWait is how long a delivery may go unanswered before the stream
	// delivers it again (to any replica): the longest a handler may take.
	AckWait time.Duration
	// MaxPrefixConsumers bounds the actions under HandlePrefix prefixes
	// that get a consumer of their own (default DefaultMaxPrefixConsumers):
	// each costs a durable consumer on the NATS server, and clients choose
	// the actions. Beyond it an action is not consumed from the stream; the
	// dispatcher logs it once and tells Hooks.PrefixConsumer ("limited").
	MaxPrefixConsumers int
}

// WithReliable makes the dispatcher consume, for every action registered
// with Handle, both <prefix>.in.<action> (core) and <prefix>.inq.<action>
// through a durable consumer of the inbound stream that every replica in
// the queue group shares. Zero fields take the defaults.
//
// A reliable action's handler decides its fate: nil acknowledges it (it is
// removed from the stream); a refusal, a *Error with a 4xx code or
// ErrBadDetails, is replied and acknowledged, never retried; any other error
// or a panic retries it after Backoff, and after MaxDeliver attempts the
// envelope and the last error are published to <prefix>.dead.<action>
// (see DeadLetter), the client gets the error reply, and the action is
// removed. Handlers see the attempt in Message.Attempt and the client's id
// in Message.ID; delivery is at least once, so a handler whose effect must
// happen once records (User, ID) with the effect, in one transaction (see
// the package's Example_idempotent).
//
// Actions under a HandlePrefix prefix (and no Handle of their own) are
// consumed the same way, each through a consumer of its own, made once the
// action is found: in the stream at Start (actions stored while no
// dispatcher ran), from the stream's messages while running, and in the
// stream every 30 s (a signal lost while the connection was down). That
// consumer is the one Handle would make (ConsumerName), shared by the
// replicas and marked with MetadataPrefix. An action that another
// service's consumer already filters (a work-queue stream refuses a second
// one) is left to it, logged, and told to Hooks.PrefixConsumer ("taken");
// the other way round, Start of a service whose Handle finds the action
// taken by another queue group's prefix deletes that consumer and takes it
// over (a delivery in flight there may then be handled once more).
// At most MaxPrefixConsumers actions get one. Each replica receives a copy
// of every message of <prefix>.inq.> on core NATS, used only to find new
// actions: plan the bandwidth of reliable actions once per replica.
func WithReliable(r ReliableOptions) Option {
	return func(o *Options) error {
		if r.Stream == "" {
			r.Stream = DefaultStream
		}
		if strings.ContainsAny(r.Stream, ".*> \t\r\n/\\") {
			return fmt.Errorf("%w: stream name %q", ErrInvalidOption, r.Stream)
		}
		if r.MaxDeliver == 0 {
			r.MaxDeliver = DefaultMaxDeliver
		}
		if r.AckWait == 0 {
			r.AckWait = DefaultAckWait
		}
		if len(r.Backoff) == 0 {
			r.Backoff = DefaultBackoff
		}
		if r.MaxPrefixConsumers == 0 {
			r.MaxPrefixConsumers = DefaultMaxPrefixConsumers
		}
		switch {
		case r.MaxDeliver < 1:
			return fmt.Errorf("%w: max deliver must be at least 1, got %d", ErrInvalidOption, r.MaxDeliver)
		case r.AckWait < time.Second:
			return fmt.Errorf("%w: ack wait must be at least 1s, got %s", ErrInvalidOption, r.AckWait)
		case r.MaxPrefixConsumers < 1:
			return fmt.Errorf("%w: max prefix consumers must be at least 1, got %d", ErrInvalidOption, r.MaxPrefixConsumers)
		}
		for _, b := range r.Backoff {
			if b <= 0 {
				return fmt.Errorf("%w: backoff must be positive, got %s", ErrInvalidOption, b)
			}
		}
		r.Backoff = append([]time.Duration(nil), r.Backoff...)
		o.Reliable = &r
		return nil
	}
}

// backoff is the pause after failed attempt n (1, 2, ...).
func (r *ReliableOptions) backoff(attempt int) time.Duration {
	return r.Backoff[min(attempt, len(r.Backoff))-1]
}

// ConsumerName is the durable consumer of action's reliable frames for the
// dispatchers in queue group queue: readable, and unique by a hash, since a
// consumer name cannot hold "." or "/" and actions may.
func ConsumerName(queue, action string) string {
	h := fnv.New32a()
	h.Write([]byte(queue + "\x00" + action))
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '_'
		}, s)
	}
	return fmt.Sprintf("%s_%s_%08x", clean(queue), clean(action), h.Sum32())
}

// deliverSubject is where the consumer of action pushes its messages, to the
// queue group of the replicas.
func (d *Dispatcher) deliverSubject(action string) string {
	return "_WSGATE." + d.opts.Prefix + "." + d.opts.Queue + "." + action
}

// planReliable creates or updates the consumer of each action's reliable
// frames and returns their subscriptions; with a prefix registered, it also
// returns the prefixConsumers that gives the actions under the prefixes
// theirs (stopped by the caller if Start fails). d.mu must be held.
func (d *Dispatcher) planReliable(ctx context.Context, hctx context.Context) ([]planned, *prefixConsumers, error) {
	r := d.opts.Reliable
	if r == nil || len(d.handlers)+len(d.prefixes) == 0 {
		return nil, nil, nil
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		return nil, nil, fmt.Errorf("dispatcher: jetstream: %w", err)
	}
	sctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	stream, err := js.Stream(sctx, r.Stream)
	if err != nil {
		return nil, nil, fmt.Errorf("dispatcher: inbound stream %s: %w", r.Stream, err)
	}
	plan := make([]planned, 0, len(d.handlers))
	for action, h := range d.handlers {
		_, err := stream.CreateOrUpdateConsumer(sctx, d.consumerConfig(action))
		if notUnique(err) {
			// Another queue group's prefix may have found the action first.
			took, terr := d.takeOverFromPrefixes(sctx, stream, action)
			switch {
			case terr != nil:
				err = errors.Join(err, terr)
			case took:
				_, err = stream.CreateOrUpdateConsumer(sctx, d.consumerConfig(action))
			}
		}
		if notUnique(err) {
			return nil, nil, fmt.Errorf("dispatcher: consumer of %s: another queue group than %q consumes it: the inbound stream is a work queue, so one queue group handles each reliable action (and lifecycle event); handle it in that group (for bin/dispatcher: an HTTP route in its routes file): %w", action, d.opts.Queue, err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("dispatcher: consumer of %s: %w", action, err)
		}
		plan = append(plan, planned{d.deliverSubject(action), d.opts.Queue, d.reliableCallback(hctx, action, h)})
	}
	if len(d.prefixes) == 0 {
		return plan, nil, nil
	}
	// ctx, not sctx: each step has its own timeout, and there may be up to
	// MaxPrefixConsumers actions to give a consumer.
	pc, found, err := d.startPrefixConsumers(ctx, hctx, stream)
	if err != nil {
		return nil, nil, err
	}
	return append(plan, found...), pc, nil
}

// consumerConfig is the durable consumer of action's reliable frames: the
// same for every replica of the queue group, so that they share it.
func (d *Dispatcher) consumerConfig(action string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ConsumerName(d.opts.Queue, action),
		Description:    "wsgate dispatcher " + d.opts.Queue + ": reliable " + action,
		DeliverSubject: d.deliverSubject(action),
		DeliverGroup:   d.opts.Queue,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        d.opts.Reliable.AckWait,
		// The dispatcher counts deliveries itself, so that the last one
		// ends on the dead-letter subject rather than silently.
		MaxDeliver:    -1,
		FilterSubject: d.subjects.Inq(action),
	}
}

// reliableCallback returns the route of action's reliable messages; it runs
// on a worker.
func (d *Dispatcher) reliableCallback(ctx context.Context, action string, h Handler) nats.MsgHandler {
	return func(msg *nats.Msg) { d.receiveReliable(ctx, msg, action, h) }
}

// ReliablePending returns, per action with a consumer (its own handler's,
// or one found under a prefix), how many reliable actions wait in it: not
// delivered yet, or delivered and not answered. It asks the NATS server;
// nil without WithReliable.
func (d *Dispatcher) ReliablePending(ctx context.Context) (map[string]uint64, error) {
	r := d.opts.Reliable
	if r == nil {
		return nil, nil
	}
	js, err := jetstream.New(d.nc)
	if err != nil {
		return nil, err
	}
	actions := d.Actions()
	d.mu.Lock()
	pc := d.prefixInq
	d.mu.Unlock()
	if pc != nil {
		actions = append(actions, pc.consumed()...)
	}
	byName := make(map[string]string, len(actions)) // consumer → action
	for _, action := range actions {
		byName[ConsumerName(d.opts.Queue, action)] = action
	}
	stream, err := js.Stream(ctx, r.Stream)
	if err != nil {
		return nil, err
	}
	// One paged listing rather than a request per consumer: a prefix may
	// have up to MaxPrefixConsumers of them.
	pending := map[string]uint64{}
	list := stream.ListConsumers(ctx)
	for info := range list.Info() { // read to the end: the lister's goroutine sends them all
		if action, ours := byName[info.Name]; ours {
			pending[action] = info.NumPending + uint64(info.NumAckPending)
		}
	}
	if err := list.Err(); err != nil {
		return pending, err
	}
	var errs []error
	for name, action := range byName {
		if _, found := pending[action]; !found {
			errs = append(errs, fmt.Errorf("%s: consumer %s not found", action, name))
		}
	}
	return pending, errors.Join(errs...)
}
