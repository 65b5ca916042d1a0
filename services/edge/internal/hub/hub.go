// Package hub is the edge's connection registry and its NATS delivery: it
// indexes connections by user, group and session, holds a NATS subscription
// for each index entry only while a local connection needs it, routes every
// outbound message to the connections it targets (encoded once per edge), and
// runs the shared timer that pings, expires and times out connections. A
// message goes route → deliver (which queues it on each target's
// wsconn.Conn) → flush (which writes it); timer.go has the timer, joined.go
// the groups joined at run time.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// inboxSize is the capacity of the channel every subscription delivers into.
// When the router falls this far behind, NATS drops messages for this edge
// and counts a slow consumer; it must never block the NATS reader.
const inboxSize = 1 << 16

// Config is what the hub needs to know.
type Config struct {
	EdgeID       string
	Subjects     wire.Subjects
	PingInterval time.Duration
	MaxPerUser   int // connections one user may hold here (0: no limit)
	AuthTimeout  time.Duration
	Logger       *slog.Logger
	Stats        *stats.Stats
	Tracer       trace.Tracer // nil: no tracing
	// Memberships loads the stored joins of a user or session before a
	// connection's ok (DESIGN §9); nil when they are not stored.
	Memberships Loader
	// GroupsChanged is told, outside the hub's lock, of each connection
	// whose groups a join or leave changed (presence records them); nil:
	// nobody is.
	GroupsChanged func(*Client)
	// History: deliver what the history stream republishes on
	// <prefix>.out.* (with its sequence) instead of <prefix>.send.*.
	History bool
}

// topic is one user, group or session with its local connections and the
// NATS subscription that exists exactly while clients is not empty.
type topic struct {
	clients map[*Client]struct{}
	sub     *nats.Subscription
}

// Errors of Authenticate.
var (
	// ErrUnavailable: NATS is not connected, so subscriptions cannot be confirmed.
	ErrUnavailable = errors.New("hub: messaging is unavailable")
	// ErrUserLimit: the user already holds MaxPerUser connections here.
	ErrUserLimit = errors.New("hub: too many connections for this user")
)

// Hub is the registry. Lock order: Hub.mu before wsconn.Conn's lock.
type Hub struct {
	cfg   Config         // static
	nc    *nats.Conn     // static
	inbox chan *nats.Msg // static: every subscription delivers here
	// flushes carries shares of a large fan-out to the flush workers.
	flushes chan []*wsconn.Conn // static
	workers int                 // static: number of flush workers
	timer   *timer              // static
	// routed counts the routing batches, for the timer to tell whether
	// deliveries flow.
	routed atomic.Uint64
	// out gives the subjects of user, group and session topics.
	out topicSubjects // static
	// payload is deliver's encoding buffer, owned by the route goroutine:
	// a message is encoded there, then framed in one allocation.
	payload []byte

	mu       sync.RWMutex
	clients  map[string]*Client // by Client.ID; owned by mu
	users    map[string]*topic  // owned by mu
	groups   map[string]*topic  // owned by mu
	sessions map[string]*topic  // owned by mu
	stored   map[target]*stored // joins stored for a local user or session; owned by mu (joined.go)
	perm     []*nats.Subscription
}

// New returns a hub delivering from nc. Call Start before use.
func New(nc *nats.Conn, cfg Config) *Hub {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = stats.New(nil, nil)
	}
	if cfg.Tracer == nil {
		cfg.Tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	workers := max(1, runtime.GOMAXPROCS(0))
	return &Hub{
		cfg: cfg, nc: nc, inbox: make(chan *nats.Msg, inboxSize), out: newTopicSubjects(cfg),
		flushes: make(chan []*wsconn.Conn, 4*workers), workers: workers,
		timer:    newTimer(cfg.PingInterval, cfg.AuthTimeout),
		clients:  map[string]*Client{},
		users:    map[string]*topic{},
		groups:   map[string]*topic{},
		sessions: map[string]*topic{},
		stored:   map[target]*stored{},
	}
}

// Start subscribes the permanent subjects. The subscriptions reach the
// server with the next flush; NATS replays them after every reconnect.
func (h *Hub) Start() error {
	s := h.cfg.Subjects
	own := h.cfg.EdgeID + ".*"
	all, users, filter := s.SendAll(), s.SendUsers(), s.SendFilter()
	if h.cfg.History {
		all, users, filter = s.OutAll(), s.OutUsers(), s.OutFilter()
	}
	for _, subj := range []string{
		all, users, filter, s.SendConn(own),
		s.CloseUser("*"), s.CloseSession("*"), s.CloseConn(own),
	} {
		sub, err := h.nc.ChanSubscribe(subj, h.inbox)
		if err != nil {
			return fmt.Errorf("hub: subscribe %s: %w", subj, err)
		}
		h.perm = append(h.perm, sub)
	}
	return nil
}

// Run routes messages, flushes connections and runs the shared timer until
// ctx is done. It is called once.
func (h *Hub) Run(ctx context.Context) {
	var workers sync.WaitGroup
	for range h.workers {
		workers.Go(h.flushLoop)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		// The router alone hands shares to the workers: once it has
		// returned none can come, and the workers stop after writing
		// every share they were given. Were the workers to stop on ctx
		// too, a share handed over after they looked would be stranded.
		defer close(h.flushes)
		h.route(ctx)
	})
	wg.Go(func() { h.tick(ctx) })
	wg.Wait()
	workers.Wait()
}

// Add registers a client that is not authenticated yet: it receives nothing
// until Authenticate, and the timer closes it after AuthTimeout.
func (h *Hub) Add(c *Client) {
	h.mu.Lock()
	h.clients[c.ID] = c
	h.mu.Unlock()
	h.timer.add(c, h.cfg.AuthTimeout)
}

// Counts returns the number of clients by state, for the connections gauge.
func (h *Hub) Counts() (pending, anonymous, authenticated int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.clients {
		switch id := c.Identity(); {
		case id == nil:
			pending++
		case id.User == "":
			anonymous++
		default:
			authenticated++
		}
	}
	return pending, anonymous, authenticated
}

// Len is the number of registered clients.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.clients)
}

// Authenticate gives c its identity, subscribes what it needs, and returns
// once the NATS server has confirmed those subscriptions, so that the first
// message published to the client after this call is never lost.
func (h *Hub) Authenticate(ctx context.Context, c *Client, id *auth.Identity) error {
	h.mu.Lock()
	if old := c.identity.Load(); h.cfg.MaxPerUser > 0 && id.User != "" && (old == nil || old.User != id.User) {
		if t := h.users[id.User]; t != nil && len(t.clients) >= h.cfg.MaxPerUser {
			h.mu.Unlock()
			return ErrUserLimit
		}
	}
	old := c.identity.Swap(id)
	h.timer.identityChanged(c, h.cfg.AuthTimeout)
	if err := h.reindexLocked(c, old, id); err != nil {
		h.mu.Unlock()
		return err
	}
	h.mu.Unlock()
	var err error
	if lerr := h.loadStored(ctx, c, id); lerr != nil {
		err = lerr
	} else if !h.nc.IsConnected() {
		// NATS replays the subscriptions when it is back, but nobody can
		// confirm them now: the promise of the ok frame cannot be kept.
		err = ErrUnavailable
	} else if ferr := h.nc.FlushWithContext(ctx); ferr != nil {
		err = fmt.Errorf("hub: confirm subscriptions: %w", ferr)
	}
	if err != nil {
		// A connection that was not authenticated stays so: it receives
		// nothing, and its end is no lifecycle event. A renewal that could
		// not be confirmed leaves the identity it had, with its expiry.
		h.mu.Lock()
		if c.identity.CompareAndSwap(id, old) {
			h.timer.identityChanged(c, h.cfg.AuthTimeout)
			if uerr := h.reindexLocked(c, id, old); uerr != nil {
				h.cfg.Logger.Warn("unsubscribe failed", "conn", c.ID, "err", uerr)
			}
		}
		h.mu.Unlock()
	}
	return err
}

// Remove unregisters c and drops the subscriptions nobody needs any more.
func (h *Hub) Remove(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c.ID]; !ok {
		return
	}
	delete(h.clients, c.ID)
	h.timer.remove(c)
	groups := c.Groups()
	if err := h.reindexLocked(c, c.identity.Load(), nil); err != nil {
		h.cfg.Logger.Warn("unsubscribe failed", "conn", c.ID, "err", err)
	}
	c.setGroups(groups) // for its Client/disconnection envelope
}

// reindexLocked moves c from the topics of old to those of id (either may be nil).
func (h *Hub) reindexLocked(c *Client, old, id *auth.Identity) error {
	var errs []error
	s := h.out
	move := func(topics map[string]*topic, was, is []string, subject func(string) string) {
		for _, k := range was {
			if !contains(is, k) {
				errs = append(errs, h.leaveLocked(topics, k, c))
			}
		}
		for _, k := range is {
			if !contains(was, k) {
				errs = append(errs, h.joinLocked(topics, k, c, subject))
			}
		}
	}
	var wasUser, isUser, wasSession, isSession []string
	if old != nil {
		wasUser, wasSession = nonEmpty(old.User), nonEmpty(old.Session)
	}
	if id != nil {
		isUser, isSession = nonEmpty(id.User), nonEmpty(id.Session)
	}
	move(h.users, wasUser, isUser, s.user)
	move(h.sessions, wasSession, isSession, s.session)
	h.forgetStoredLocked(old)
	// Groups: the token's and the joined ones (joined.go).
	wasGroups, isGroups := c.Groups(), h.groupsLocked(c, id)
	move(h.groups, wasGroups, isGroups, s.group)
	c.setGroups(isGroups)
	return errors.Join(errs...)
}

func (h *Hub) joinLocked(topics map[string]*topic, key string, c *Client, subject func(string) string) error {
	t := topics[key]
	if t == nil {
		sub, err := h.nc.ChanSubscribe(subject(key), h.inbox)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject(key), err)
		}
		t = &topic{clients: map[*Client]struct{}{}, sub: sub}
		topics[key] = t
		h.cfg.Stats.Subscriptions.Add(1)
	}
	t.clients[c] = struct{}{}
	return nil
}

func (h *Hub) leaveLocked(topics map[string]*topic, key string, c *Client) error {
	t := topics[key]
	if t == nil {
		return nil
	}
	delete(t.clients, c)
	if len(t.clients) > 0 {
		return nil
	}
	delete(topics, key)
	h.cfg.Stats.Subscriptions.Add(-1)
	if err := t.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe %s: %w", t.sub.Subject, err)
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// route delivers every message of the inbox. One goroutine does it, so that
// messages from one publisher reach each connection in publish order.
func (h *Hub) route(ctx context.Context) {
	var pending []*wsconn.Conn // connections whose writing this goroutine took over
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-h.inbox:
			pending, _ = h.deliver(m, time.Now(), pending[:0])
			pending = h.deliverWaiting(pending)
			h.flush(pending)
			clear(pending)
			h.routed.Add(1)
		}
	}
}

// maxBatch bounds the messages routed before their frames are written.
const maxBatch = 64

// spreadBatch: once this many connections wait to be written, a waiting
// message that shares none of them ends the batch (see deliverWaiting).
const spreadBatch = 8

// deliverWaiting queues the messages that arrived while the last one was
// routed (at most maxBatch-1), before anything is written: a connection
// that several of them target then gets them in one write. Batching pays
// only while the messages share their recipients (a broadcast's backlog);
// messages to different connections (unicasts, replies) gain nothing from
// waiting for each other, so the batch ends once spreadBatch connections
// wait and a message shares none of its recipients with them. When
// messages come slower than they are routed there are none, and nothing
// waits.
func (h *Hub) deliverWaiting(pending []*wsconn.Conn) []*wsconn.Conn {
	for range maxBatch - 1 {
		select {
		case m := <-h.inbox:
			before := len(pending)
			var targeted int
			pending, targeted = h.deliver(m, time.Now(), pending)
			if added := len(pending) - before; added > 0 && added == targeted && len(pending) >= spreadBatch {
				return pending // m shared no recipient with the batch
			}
		default:
			return pending
		}
	}
	return pending
}

// inlineFlush: fan-outs up to this many connections are written by the
// router itself, unless the router is behind; larger ones are shared with
// the flush workers.
const inlineFlush = 64

// behind: the router is behind when this many messages wait in the inbox.
const behind = maxBatch

// flush writes the queues of conns, none of which blocks: a socket that is
// full gets a writer goroutine of its own. Large sets, and any set while the
// router is behind, are split between this goroutine and the flush workers,
// so that every core writes: when messages to different connections
// (unicasts, replies) come faster than one goroutine writes them, one by
// one, the writing is shared. Below that, sharing would cost a wake-up for
// no gain. Only the router calls it (see Run).
func (h *Hub) flush(conns []*wsconn.Conn) {
	if h.workers > 1 && (len(conns) > inlineFlush || len(conns) > 1 && len(h.inbox) >= behind) {
		share := (len(conns) + h.workers - 1) / h.workers
		for len(conns) > share {
			h.flushes <- append([]*wsconn.Conn(nil), conns[len(conns)-share:]...)
			conns = conns[:len(conns)-share]
		}
	}
	flushAll(conns)
}

// flushLoop is a flush worker. It stops when the router has returned and
// every share is written, so that no connection is left holding a right to
// write nobody uses.
func (h *Hub) flushLoop() {
	for conns := range h.flushes {
		flushAll(conns)
	}
}

func flushAll(conns []*wsconn.Conn) {
	for _, c := range conns {
		c.Flush()
	}
}

// maxKeptPayload is the largest encoding buffer deliver keeps for the next message.
const maxKeptPayload = 64 << 10

var serverClose = wsconn.TextFrame(wire.AppendServerFrame(nil, wire.ActionClose, nil, nil))

// deliver queues m for the connections it targets and returns, appended to
// pending, those whose writing the caller must flush, and how many
// connections it targeted.
func (h *Hub) deliver(m *nats.Msg, at time.Time, pending []*wsconn.Conn) ([]*wsconn.Conn, int) {
	rest, ok := strings.CutPrefix(m.Subject, h.cfg.Subjects.Prefix+".")
	if !ok {
		return pending, 0
	}
	if ctl, ok := strings.CutPrefix(rest, "ctl.close."); ok {
		h.kick(ctl)
		return pending, 0
	}
	target, ok := strings.CutPrefix(rest, "send.")
	var seq uint64
	if !ok {
		if target, seq, ok = h.republished(rest, m); !ok {
			return pending, 0
		}
	}
	ctx := context.Background()
	var span trace.Span
	if m.Header != nil && m.Header.Get(wire.HeaderTraceparent) != "" {
		// The publisher traced this message: the delivery joins its trace.
		ctx = propagation.TraceContext{}.Extract(ctx, telemetry.NATSHeader(m.Header))
		ctx, span = h.cfg.Tracer.Start(ctx, "ws deliver", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.destination.name", m.Subject)))
		defer span.End()
	}
	out, err := wire.DecodeOutbound(m.Data)
	if err != nil {
		h.cfg.Stats.BadOutbound()
		h.cfg.Logger.DebugContext(ctx, "outbound message refused", "subject", m.Subject, "err", err)
		return pending, 0
	}
	if seq != 0 {
		h.payload = wire.AppendServerFrameSeq(h.payload[:0], out.Action, out.Details, out.Ref, seq)
	} else {
		h.payload = wire.AppendServerFrame(h.payload[:0], out.Action, out.Details, out.Ref)
	}
	d := delivery{out: wsconn.NewOutbound(h.payload), at: at, s: h.cfg.Stats, pending: pending, seq: seq}
	defer d.counted()
	if cap(h.payload) > maxKeptPayload {
		h.payload = nil // a rare large message does not keep its buffer
	}
	if span != nil {
		span.SetName("ws deliver " + out.Action)
		defer func() { span.SetAttributes(attribute.Int("wsgate.recipients", d.sent)) }()
	}

	h.mu.RLock()
	defer h.mu.RUnlock()
	kind, key, _ := strings.Cut(target, ".")
	switch kind {
	case "all":
		for _, c := range h.clients {
			if c.Identity() != nil {
				d.to(c)
			}
		}
	case "users":
		for _, c := range h.clients {
			if id := c.Identity(); id != nil && id.User != "" {
				d.to(c)
			}
		}
	case "filter":
		if out.Filter == nil {
			h.cfg.Stats.BadOutbound()
			return pending, 0
		}
		for _, c := range h.clients {
			if id := c.Identity(); id != nil {
				if v, ok := c.property(id, out.Filter.Property); ok && v == out.Filter.Value {
					d.to(c)
				}
			}
		}
	case "user":
		d.toTopic(h.users[key])
	case "group":
		d.toTopic(h.groups[key])
	case "session":
		d.toTopic(h.sessions[key])
	case "conn":
		_, id, _ := strings.Cut(key, ".")
		if c := h.clients[id]; c != nil && c.Identity() != nil {
			d.to(c)
		}
	}
	return d.pending, d.sent
}

// delivery queues one message, each of its frames built once, for many clients.
type delivery struct {
	out     wsconn.Outbound
	at      time.Time // arrival from NATS
	sent    int
	s       *stats.Stats
	pending []*wsconn.Conn // clients to flush
	seq     uint64         // history sequence of a stored message; 0 for others
}

func (d *delivery) toTopic(t *topic) {
	if t == nil {
		return
	}
	for c := range t.clients {
		d.to(c)
	}
}

func (d *delivery) to(c *Client) {
	if d.seq != 0 {
		d.admit(c)
		return
	}
	d.queue(c)
}

func (d *delivery) queue(c *Client) {
	flush, err := c.Conn.Queue(d.out.FrameFor(c.Conn), d.at)
	d.sent++
	if flush {
		d.pending = append(d.pending, c.Conn)
	}
	switch {
	case err == nil:
		d.s.Delivered.Add(1)
	case errors.Is(err, wsconn.ErrQueueFull):
		d.s.SlowConsumer()
	default:
		d.s.Dropped.Add(1)
	}
}

// kick closes the connections of a ctl.close.<kind>.<id> subject.
func (h *Hub) kick(target string) {
	kind, key, _ := strings.Cut(target, ".")
	var victims []*Client
	h.mu.RLock()
	switch kind {
	case "user":
		if t := h.users[key]; t != nil {
			for c := range t.clients {
				victims = append(victims, c)
			}
		}
	case "session":
		if t := h.sessions[key]; t != nil {
			for c := range t.clients {
				victims = append(victims, c)
			}
		}
	case "conn":
		_, id, _ := strings.Cut(key, ".")
		if c := h.clients[id]; c != nil {
			victims = append(victims, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range victims {
		_ = c.Conn.Send(serverClose)
		if c.Conn.Close(wire.CloseNormal, "closed by server") {
			h.cfg.Stats.Kicked()
		}
	}
}

func (h *Hub) snapshot(dst []*Client) []*Client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.clients {
		dst = append(dst, c)
	}
	return dst
}

// CloseAll closes every client with code, spreading the closes evenly over
// spread so that they do not all reconnect elsewhere at the same instant.
// It returns when the last close is queued or ctx is done (then the rest are
// closed at once).
func (h *Hub) CloseAll(ctx context.Context, code int, reason string, spread time.Duration) {
	clients := h.snapshot(nil)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i, c := range clients {
		if spread > 0 && ctx.Err() == nil {
			// The first close waits one slot too: readiness has already
			// turned off, and load balancers get that slot to notice.
			due := start.Add(spread * time.Duration(i+1) / time.Duration(len(clients)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
		}
		c.Conn.Close(code, reason)
	}
}

// Stop unsubscribes the permanent subjects.
func (h *Hub) Stop() {
	for _, s := range h.perm {
		_ = s.Unsubscribe()
	}
}

// AbortAll tears down every client's socket at once (last resort of shutdown).
func (h *Hub) AbortAll() {
	for _, c := range h.snapshot(nil) {
		c.Conn.Abort()
	}
}
