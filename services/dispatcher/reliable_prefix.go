package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
)

// DefaultMaxPrefixConsumers is the default ReliableOptions.MaxPrefixConsumers.
const DefaultMaxPrefixConsumers = 1000

// MetadataPrefix is the consumer metadata key that marks the consumer of an
// action found under a HandlePrefix prefix; its value is the prefix.
const MetadataPrefix = "wsgate.prefix"

const (
	// prefixRescanInterval is how often a running dispatcher looks in the
	// inbound stream for actions under its prefixes that no signal
	// announced: signals are core NATS messages, lost while the connection
	// is down or dropped when their subscription falls behind.
	prefixRescanInterval = 30 * time.Second
	// errCodeWQNotUnique is JetStream's error for a consumer whose filter
	// overlaps another consumer's on a work-queue stream
	// (JSConsumerWQConsumerNotUniqueErr); nats.go has no name for it.
	errCodeWQNotUnique jetstream.ErrorCode = 10100
)

// PrefixConsumerEvent says what became of a reliable action found under a
// HandlePrefix prefix, for Hooks.PrefixConsumer.
type PrefixConsumerEvent string

// Events of an action found under a prefix.
const (
	// PrefixConsumerCreated: the action got its consumer (or this replica
	// joined the one another replica made).
	PrefixConsumerCreated PrefixConsumerEvent = "created"
	// PrefixConsumerTaken: another consumer of the inbound stream (another
	// service's Handle) already filters the action; it is left to that one.
	PrefixConsumerTaken PrefixConsumerEvent = "taken"
	// PrefixConsumerFailed: the consumer could not be created; the action's
	// next message, or the next look in the stream, tries again.
	PrefixConsumerFailed PrefixConsumerEvent = "failed"
	// PrefixConsumerLimited: MaxPrefixConsumers actions are known already;
	// this one is not consumed from the stream by this dispatcher (counted
	// each time it is found).
	PrefixConsumerLimited PrefixConsumerEvent = "limited"
)

// prefixState is where an action found under a prefix is.
type prefixState int

const (
	prefixClaimed  prefixState = iota // its consumer is being created
	prefixConsumed                    // it has its consumer and subscription
	prefixTaken                       // another consumer filters it
)

// errTaken reports that another consumer of the work-queue stream filters
// an action.
var errTaken = errors.New("another consumer of the inbound stream filters the action")

// prefixConsumers gives each reliable action under the dispatcher's
// prefixes a durable consumer of its own, the one Handle would make for it
// (same name, so every replica of the queue group shares it and each action
// is delivered to one of them). It has to find the actions: no subject
// filter selects "the actions under shop/", and a work-queue stream refuses
// a consumer on <prefix>.inq.> beside the per-action ones. It looks at the
// stream's subjects at Start and every prefixRescanInterval, and listens to
// <prefix>.inq.> on core NATS (a stored publish reaches core subscribers
// too), without a queue group so that every replica joins every consumer.
// That subscription is only a signal: its messages are never handled, only
// the consumers' deliveries are, so none is handled twice.
type prefixConsumers struct {
	d      *Dispatcher      // static after construction
	stream jetstream.Stream // static after construction
	router router           // static after construction
	inq    string           // "<prefix>.inq.", static after construction
	max    int              // static after construction
	// route returns the route of an action's deliveries, on the handlers'
	// context; static after construction.
	route func(action string, h Handler) nats.MsgHandler
	// wake tells loop that queued holds actions (capacity 1: a pending
	// wake-up covers every action queued before loop takes them).
	wake   chan struct{}
	signal *nats.Subscription // set by startPrefixConsumers, unsubscribed by stop

	cancel   context.CancelFunc // stops loop; set by run
	done     chan struct{}      // closed when loop returns; set by run
	stopOnce sync.Once

	mu      sync.Mutex             // guards the fields below
	actions map[string]prefixState // every action found under the prefixes, at most max
	queued  []string               // actions found by a signal, waiting for loop; claimed in actions
	full    bool                   // max was reached (logged once)
}

// startPrefixConsumers subscribes the signal, then finds the actions under
// the prefixes that the stream holds and creates their consumers; it
// returns their subscriptions for Start to make. The caller runs or stops
// the result. d.mu must be held.
func (d *Dispatcher) startPrefixConsumers(ctx, hctx context.Context, stream jetstream.Stream) (*prefixConsumers, []planned, error) {
	pc := &prefixConsumers{
		d:       d,
		stream:  stream,
		router:  d.router(),
		inq:     d.subjects.Inq(""),
		max:     d.opts.Reliable.MaxPrefixConsumers,
		route:   func(action string, h Handler) nats.MsgHandler { return d.reliableCallback(hctx, action, h) },
		wake:    make(chan struct{}, 1),
		actions: map[string]prefixState{},
	}
	// Subscribed before the look at the stream, so that an action stored
	// between the two is not missed.
	sig, err := d.nc.Subscribe(d.subjects.InqAll(), pc.onSignal)
	if err != nil {
		return nil, nil, fmt.Errorf("dispatcher: subscribe %s: %w", d.subjects.InqAll(), err)
	}
	pc.signal = sig
	found, err := pc.scan(ctx)
	if err != nil {
		pc.stop()
		return nil, nil, err
	}
	plan := make([]planned, 0, len(found))
	for _, action := range found {
		p, err := pc.consume(ctx, action)
		if errors.Is(err, errTaken) {
			continue
		}
		if err != nil {
			pc.stop()
			return nil, nil, err
		}
		plan = append(plan, p)
	}
	return pc, plan, nil
}

// run starts the loop that creates the consumers of the actions found
// while the dispatcher runs, routed by rt and delivering into inbox.
func (pc *prefixConsumers) run(rt *routes, inbox chan *nats.Msg) {
	ctx, cancel := context.WithCancel(context.Background())
	pc.cancel, pc.done = cancel, make(chan struct{})
	go func() {
		defer close(pc.done)
		pc.loop(ctx, rt, inbox)
	}()
}

// stop ends the signal and the loop, and waits for a consumer creation in
// progress; it may be called more than once, and before run.
func (pc *prefixConsumers) stop() {
	pc.stopOnce.Do(func() {
		_ = pc.signal.Unsubscribe() // fails only if already closed, which is the goal
		if pc.cancel != nil {
			pc.cancel()
			<-pc.done
		}
	})
}

func (pc *prefixConsumers) loop(ctx context.Context, rt *routes, inbox chan *nats.Msg) {
	tick := time.NewTicker(prefixRescanInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-pc.wake:
			pc.mu.Lock()
			queued := pc.queued
			pc.queued = nil
			pc.mu.Unlock()
			for _, action := range queued {
				pc.add(ctx, action, rt, inbox)
			}
		case <-tick.C:
			found, err := pc.scan(ctx)
			if err != nil {
				pc.d.log.Warn("reliable actions under prefixes not looked up in the inbound stream", "err", err)
				continue
			}
			for _, action := range found {
				pc.add(ctx, action, rt, inbox)
			}
		}
	}
}

// onSignal claims the action of a message stored in the inbound stream, if
// it is under a prefix and new; it runs on the subscription's goroutine and
// never blocks.
func (pc *prefixConsumers) onSignal(msg *nats.Msg) {
	action := strings.TrimPrefix(msg.Subject, pc.inq)
	if wire.ValidateAction(action) != nil {
		return
	}
	prefix, _, ok := pc.router.lookup(action)
	if !ok {
		return
	}
	if !pc.claim(prefix, action) {
		return
	}
	pc.mu.Lock()
	pc.queued = append(pc.queued, action)
	pc.mu.Unlock()
	select {
	case pc.wake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// scan returns the actions under the prefixes that hold messages in the
// stream and were not found before, claimed.
func (pc *prefixConsumers) scan(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	// The jetstream package pages through the subjects.
	info, err := pc.stream.Info(ctx, jetstream.WithSubjectFilter(pc.d.subjects.InqAll()))
	if err != nil {
		return nil, fmt.Errorf("dispatcher: subjects of the inbound stream: %w", err)
	}
	var found []string
	for _, subject := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		action := strings.TrimPrefix(subject, pc.inq)
		if wire.ValidateAction(action) != nil {
			continue
		}
		if prefix, _, ok := pc.router.lookup(action); ok && pc.claim(prefix, action) {
			found = append(found, action)
		}
	}
	return found, nil
}

// claim reports whether action, under prefix, is new and within the bound;
// then it is recorded as claimed, and the caller must consume it.
func (pc *prefixConsumers) claim(prefix, action string) bool {
	pc.mu.Lock()
	if _, known := pc.actions[action]; known {
		pc.mu.Unlock()
		return false
	}
	if len(pc.actions) >= pc.max {
		first := !pc.full
		pc.full = true
		pc.mu.Unlock()
		if first {
			pc.d.log.Error("reliable actions under prefixes reached their bound; further ones are not consumed from the inbound stream",
				"max", pc.max, "action", action, "prefix", prefix)
		}
		pc.hook(prefix, action, PrefixConsumerLimited)
		return false
	}
	pc.actions[action] = prefixClaimed
	pc.mu.Unlock()
	return true
}

// consume creates the consumer of a claimed action and returns its
// subscription; errTaken if another consumer filters the action, which is
// then left to it for good. Another error forgets the action, so that it
// is tried again when found again.
func (pc *prefixConsumers) consume(ctx context.Context, action string) (planned, error) {
	prefix, h, _ := pc.router.lookup(action) // claimed actions are under a prefix
	cfg := pc.d.consumerConfig(action)
	cfg.Metadata = map[string]string{MetadataPrefix: prefix}
	ctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	_, err := pc.stream.CreateOrUpdateConsumer(ctx, cfg)
	switch {
	case notUnique(err):
		pc.set(action, prefixTaken)
		pc.d.log.Info("reliable action under a prefix left to another consumer of the inbound stream",
			"action", action, "prefix", prefix, "err", err)
		pc.hook(prefix, action, PrefixConsumerTaken)
		return planned{}, errTaken
	case err != nil:
		pc.forget(action)
		pc.hook(prefix, action, PrefixConsumerFailed)
		return planned{}, fmt.Errorf("dispatcher: consumer of %s: %w", action, err)
	}
	pc.set(action, prefixConsumed)
	pc.hook(prefix, action, PrefixConsumerCreated)
	return planned{cfg.DeliverSubject, pc.d.opts.Queue, pc.route(action, h)}, nil
}

// add consumes a claimed action while the dispatcher runs: it creates the
// consumer and subscribes its deliveries, unless the dispatcher is
// draining (the durable consumer then waits for the next start).
func (pc *prefixConsumers) add(ctx context.Context, action string, rt *routes, inbox chan *nats.Msg) {
	p, err := pc.consume(ctx, action)
	switch {
	case errors.Is(err, errTaken), ctx.Err() != nil:
		return
	case err != nil:
		pc.d.log.Warn("no consumer for a reliable action under a prefix; tried again when found again", "action", action, "err", err)
		return
	}
	// Stored first: a delivery may reach a worker before subscribe returns.
	rt.dynamic.Store(p.subject, p.cb)
	d := pc.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state != stateStarted {
		return
	}
	s, err := d.subscribe(p, inbox)
	if err != nil {
		pc.forget(action)
		d.log.Warn("no subscription for a reliable action under a prefix; tried again when found again", "action", action, "err", err)
		return
	}
	d.subs = append(d.subs, s)
}

// notUnique reports whether err is the work-queue stream's refusal of a
// consumer whose filter another consumer has.
func notUnique(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeWQNotUnique
}

// takeOverFromPrefixes deletes the consumers that another queue group's
// HandlePrefix made for action (marked with MetadataPrefix), so that
// action's own handler can have its consumer: a work-queue stream allows
// one consumer per subject, and a handler of its own wins over a prefix,
// across services as within one. The prefix's replicas keep their idle
// subscription and do not find the action again until they restart (then
// it is taken). It reports whether it deleted any.
func (d *Dispatcher) takeOverFromPrefixes(ctx context.Context, stream jetstream.Stream, action string) (bool, error) {
	subject, own := d.subjects.Inq(action), ConsumerName(d.opts.Queue, action)
	var found []string
	list := stream.ListConsumers(ctx)
	for info := range list.Info() { // read to the end: the lister's goroutine sends them all
		if info.Name != own && info.Config.FilterSubject == subject && info.Config.Metadata[MetadataPrefix] != "" {
			found = append(found, info.Name)
		}
	}
	if err := list.Err(); err != nil {
		return false, fmt.Errorf("consumers of the inbound stream: %w", err)
	}
	for _, name := range found {
		if err := stream.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return false, fmt.Errorf("delete consumer %s: %w", name, err)
		}
		d.log.Warn("deleted another queue group's consumer of an action under its prefix: the action has a handler of its own here",
			"action", action, "consumer", name)
	}
	return len(found) > 0, nil
}

func (pc *prefixConsumers) set(action string, s prefixState) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.actions[action] = s
}

func (pc *prefixConsumers) forget(action string) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	delete(pc.actions, action)
}

// consumed returns the actions that have a consumer, sorted.
func (pc *prefixConsumers) consumed() []string {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	var actions []string
	for a, s := range pc.actions {
		if s == prefixConsumed {
			actions = append(actions, a)
		}
	}
	slices.Sort(actions)
	return actions
}

func (pc *prefixConsumers) hook(prefix, action string, ev PrefixConsumerEvent) {
	if f := pc.d.opts.Hooks.PrefixConsumer; f != nil {
		f(prefix, action, ev)
	}
}
