package dispatcher

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
)

// HandlePrefix registers h for every action that starts with prefix and has
// no handler of its own (Handle): "shop/" handles "shop/cart/add" and
// "shop/pay". When several prefixes match, the longest wins, so
// HandlePrefix("shop/cart/", ...) takes "shop/cart/add" from "shop/". It must
// be called before Start; prefix is made of action characters
// (wire.ValidateAction) and has no prefix handler yet.
//
// An action is one subject token that may hold "/", so no NATS wildcard
// selects the actions under a prefix. Once a prefix is registered, Start
// therefore also subscribes <prefix>.in.> in a queue group of its own,
// PrefixQueue(queue), and routes each message there by its action: an action
// with a handler of its own is left to that handler's subscription, any other
// goes to its longest prefix, and the rest is dropped without a word. So
// within the replicas of a dispatcher each message is handled once, never
// twice; exact subscriptions stay in the queue group, which other services
// may share without losing their messages to the prefixes. Replicas that
// share a queue should register the same prefixes and actions, and two
// services should not claim the same actions under one queue.
//
// With WithReliable, the reliable actions under the prefix (<prefix>.inq.<action>)
// are handled too, with the same rules: each gets the durable consumer
// Handle would give it once the dispatcher finds it (see WithReliable), and
// Message.ID, Message.Attempt, retries and dead letters are as for Handle.
func (d *Dispatcher) HandlePrefix(prefix string, h HandlerFunc) error {
	if err := wire.ValidateAction(prefix); err != nil {
		return fmt.Errorf("%w: prefix: %w", ErrInvalidAction, err)
	}
	if h == nil {
		return fmt.Errorf("%w: prefix %s", ErrNilHandler, prefix)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkIdle(); err != nil {
		return err
	}
	if _, dup := d.prefixes[prefix]; dup {
		return fmt.Errorf("%w: prefix %s", ErrDuplicateAction, prefix)
	}
	d.prefixes[prefix] = h
	return nil
}

// Prefixes returns the prefixes registered with HandlePrefix, longest first.
func (d *Dispatcher) Prefixes() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return sortedPrefixes(d.prefixes)
}

// MatchPrefix returns the longest of prefixes that action starts with, and
// false if none does: the prefix whose handler HandlePrefix would choose.
// prefixes must be sorted longest first, as Prefixes returns them.
func MatchPrefix(prefixes []string, action string) (string, bool) {
	for _, p := range prefixes {
		if strings.HasPrefix(action, p) {
			return p, true
		}
	}
	return "", false
}

// sortedPrefixes returns the keys of m, longest first (then in byte order,
// so that the result is deterministic).
func sortedPrefixes(m map[string]Handler) []string {
	return slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
}

// PrefixQueue is the queue group of the <prefix>.in.> subscription that a
// dispatcher in queue group queue makes once it has a prefix handler.
func PrefixQueue(queue string) string { return queue + ".prefixes" }

// planned is one subscription Start makes.
type planned struct {
	subject, queue string
	cb             nats.MsgHandler
}

// plan returns the subscriptions Start makes: one per action in the queue
// group, and, once a prefix is registered, <prefix>.in.> in PrefixQueue for
// the actions under the prefixes. d.mu must be held.
func (d *Dispatcher) plan(ctx context.Context) []planned {
	plan := make([]planned, 0, len(d.handlers)+1)
	for action, h := range d.handlers {
		plan = append(plan, planned{d.subjects.In(action), d.opts.Queue, d.callback(ctx, action, h)})
	}
	if len(d.prefixes) == 0 {
		return plan
	}
	r := d.router()
	in := d.subjects.In("")
	cb := func(msg *nats.Msg) {
		action := strings.TrimPrefix(msg.Subject, in)
		// ws.in.a.b is no action an edge publishes; "a" must not route it.
		if wire.ValidateAction(action) != nil {
			return
		}
		if _, h, ok := r.lookup(action); ok {
			d.receive(ctx, msg, action, h)
		}
	}
	return append(plan, planned{d.subjects.InAll(), PrefixQueue(d.opts.Queue), cb})
}

// router returns the router of the registered handlers. It gets copies: its
// users read them without the lock. d.mu must be held.
func (d *Dispatcher) router() router {
	return router{
		exact:    maps.Clone(d.handlers),
		byPrefix: maps.Clone(d.prefixes),
		prefixes: sortedPrefixes(d.prefixes),
	}
}

// router finds the prefix handler of an action; it is read-only once built.
type router struct {
	exact    map[string]Handler // actions with subscriptions of their own
	byPrefix map[string]Handler
	prefixes []string // the keys of byPrefix, longest first
}

// lookup returns action's longest prefix and its handler, unless action has
// a handler, and so a subscription, of its own.
func (r router) lookup(action string) (string, Handler, bool) {
	if _, own := r.exact[action]; own {
		return "", nil, false
	}
	if p, ok := MatchPrefix(r.prefixes, action); ok {
		return p, r.byPrefix[p], true
	}
	return "", nil, false
}
