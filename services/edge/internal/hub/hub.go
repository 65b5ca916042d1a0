// Package hub is the edge's connection registry and its NATS delivery: it
// indexes connections by user, group and session, holds a NATS subscription
// for each index entry only while a local connection needs it, routes every
// outbound message to the connections it targets (encoded once per edge), and
// runs the shared timer that pings, expires and times out connections. A
// message goes route (route.go) → deliver (deliver.go, which queues it on
// each target's wsconn.Conn) → flush (route.go, which writes it). The
// registry and its subscriptions are registry.go, closes and the drain
// close.go, the timer timer.go, the groups joined at run time joined.go, and
// history positions position.go and stored.go.
package hub

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
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

// Hub is the registry. Lock order: Hub.mu before wsconn.Conn's lock.
type Hub struct {
	cfg   Config         // static
	nc    Messaging      // static
	inbox chan *nats.Msg // static: every subscription delivers here
	// flushes carries shares of a large fan-out to the flush workers.
	flushes chan wsconn.Batch // static
	workers int               // static: number of flush workers
	timer   *timer            // static
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

	outage outage // the NATS connection's outages, for the history holds (position.go)
}

// New returns a hub delivering from nc (a *nats.Conn). Call Start before use.
func New(nc Messaging, cfg Config) *Hub {
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
		flushes: make(chan wsconn.Batch, 4*workers), workers: workers,
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

// Stop unsubscribes the permanent subjects.
func (h *Hub) Stop() {
	for _, s := range h.perm {
		_ = s.Unsubscribe()
	}
}
