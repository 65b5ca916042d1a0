// Package rooms puts users, sessions and connections into groups at run time
// (DESIGN §9 "Joined groups"): it answers <prefix>.ctl.join.* and
// <prefix>.ctl.leave.*, stores user and session joins in NATS KV when
// presence is on, and applies every change on every edge before the answer.
//
// How the answer keeps the §4 ordering promise. Every edge subscribes the
// join and leave subjects in one queue group, so one edge, the coordinator,
// takes each request. It stores the change (KV, compare-and-set), then
// publishes it on <prefix>.rooms.apply, which every edge subscribes, with a
// reply inbox. Each edge applies it to the connections it holds, waits for
// the NATS server to confirm the new group subscriptions (a flush), and
// replies, holding the target or not. The coordinator answers {"ok": true}
// only when every live edge has replied. Live edges are known from
// <prefix>.rooms.edges: each edge announces itself there (and confirms the
// announcement with a flush) before it accepts a connection, again every
// heartbeatInterval, and says goodbye once its last connection has closed;
// an edge unheard of for peerTTL is taken for dead (its connections died
// with it). The announcements and the requests reach the coordinator through
// one channel, so an edge that announced itself before its connections
// existed is known to any request made after them. An edge that does not
// reply within applyTimeout makes the answer a 503 (stored, not confirmed).
// A connection that authenticates meanwhile loads the store after it is
// indexed (hub.Authenticate), so it gets the change either from the store
// or from the apply message: stored sets travel with their KV revision and
// an edge keeps the newest, so the order of the two does not matter.
package rooms

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Timing of the edge roster and of the confirmations.
const (
	heartbeatInterval = time.Second
	peerTTL           = 3 * heartbeatInterval
	applyTimeout      = 2 * time.Second
	announceTimeout   = 5 * time.Second // the NATS server confirming the hello at start
	// warmUp: a new edge learns the others from their answers to its
	// hello, and surely from their heartbeats within this time; it takes
	// no roster for a request before.
	warmUp = heartbeatInterval + heartbeatInterval/4
)

// Queue is the queue group of the join and leave subscriptions.
const Queue = "wsgate-rooms"

// maxCoordinating bounds the requests one edge coordinates at a time.
const maxCoordinating = 256

// maxApplyBatch bounds the changes an edge applies before one confirmation.
const maxApplyBatch = 64

// After a NATS reconnection, and reloadSettle for the stores' replicas to
// catch up with their leader, the stored joins are read again, each read
// within reloadTimeout, the whole up to reloadTries times reloadPause apart
// while some fail.
const (
	reloadSettle  = time.Second
	reloadTimeout = 5 * time.Second
	reloadTries   = 5
	reloadPause   = 2 * time.Second
)

// Members is what rooms needs of the hub.
type Members interface {
	// Join adds groups to (or removes them from) the own joins of the
	// local connections of a target; kind conn takes the local id.
	Join(kind, key string, groups []string, join bool) (int, error)
	// SetStored sets the stored joins of a user or session at revision rev.
	SetStored(kind, key string, rev uint64, groups []string) (int, error)
	// Confirm returns once the NATS server has every subscription made.
	Confirm(ctx context.Context) error
	// ReloadStored reads again every stored join the edge keeps, each read
	// within timeout.
	ReloadStored(ctx context.Context, timeout time.Duration) error
}

var _ Members = (*hub.Hub)(nil)

// Config is what the service needs.
type Config struct {
	EdgeID   string
	Subjects wire.Subjects
	Store    *Store // nil: WS_PRESENCE=off, joins apply to open connections only
	Logger   *slog.Logger
	Meter    metric.Meter // nil: no metrics
}

// Service is one edge's part of the joined groups.
type Service struct {
	cfg     Config
	nc      *nats.Conn
	members Members
	ctl     chan *nats.Msg // requests and announcements, in arrival order
	apply   chan *nats.Msg // changes to put in force here
	reload  chan struct{}  // the stored joins are to be read again (Reconnected)
	subs    []*nats.Subscription
	joins   metric.Int64Counter
	leaves  metric.Int64Counter

	wg      sync.WaitGroup // coordinators
	sem     chan struct{}  // bounds coordinators
	stop    sync.Once
	started time.Time // static after Start

	mu      sync.Mutex
	peers   map[string]time.Time // live edges by id, when last heard; owned by mu
	closing bool                 // Stop began: no new coordinator; owned by mu
}

// New returns the service; Start subscribes, Run serves.
func New(nc *nats.Conn, members Members, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	meter := cfg.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	return &Service{
		cfg: cfg, nc: nc, members: members,
		ctl: make(chan *nats.Msg, 4096), apply: make(chan *nats.Msg, 4096), reload: make(chan struct{}, 1),
		sem: make(chan struct{}, maxCoordinating), peers: map[string]time.Time{},
		joins: telemetry.Must(meter.Int64Counter("wsgate.edge.joins",
			metric.WithDescription("Join requests this edge coordinated, by result (ok, refused, unconfirmed)."))),
		leaves: telemetry.Must(meter.Int64Counter("wsgate.edge.leaves",
			metric.WithDescription("Leave requests this edge coordinated, by result (ok, refused, unconfirmed)."))),
	}
}

// announcement is the payload of <prefix>.rooms.edges.
type announcement struct {
	Edge  string `json:"edge"`
	Hello bool   `json:"hello,omitempty"` // a new edge: the others announce themselves at once
	Bye   bool   `json:"bye,omitempty"`
}

// Start subscribes and announces the edge, confirming the announcement when
// NATS is connected (it must precede the edge's first connection).
func (s *Service) Start(ctx context.Context) error {
	subj := s.cfg.Subjects
	for _, sub := range []struct {
		subject, queue string
		ch             chan *nats.Msg
	}{
		{subj.RoomsEdges(), "", s.ctl},
		{subj.JoinAll(), Queue, s.ctl},
		{subj.LeaveAll(), Queue, s.ctl},
		{subj.RoomsApply(), "", s.apply},
	} {
		var (
			ns  *nats.Subscription
			err error
		)
		if sub.queue == "" {
			ns, err = s.nc.ChanSubscribe(sub.subject, sub.ch)
		} else {
			ns, err = s.nc.ChanQueueSubscribe(sub.subject, sub.queue, sub.ch)
		}
		if err != nil {
			return err
		}
		s.subs = append(s.subs, ns)
	}
	s.started = time.Now()
	s.announce(announcement{Hello: true})
	if s.nc.IsConnected() {
		// Start's ctx lives as long as the edge: the confirmation gets a
		// deadline of its own (FlushWithContext requires one).
		fctx, cancel := context.WithTimeout(ctx, announceTimeout)
		defer cancel()
		if err := s.nc.FlushWithContext(fctx); err != nil {
			s.cfg.Logger.Warn("rooms: announcement not confirmed", "err", err)
		}
	}
	return nil
}

func (s *Service) announce(a announcement) {
	a.Edge = s.cfg.EdgeID
	data, _ := json.Marshal(a)
	_ = s.nc.Publish(s.cfg.Subjects.RoomsEdges(), data)
}

// Stop says goodbye and unsubscribes: call it once the edge holds no
// connection, while Run still runs. Coordinations under way finish first
// (this edge still applies changes meanwhile).
func (s *Service) Stop() {
	s.stop.Do(func() {
		for _, sub := range s.subs {
			if sub.Queue == Queue { // join and leave: no new request
				_ = sub.Unsubscribe()
			}
		}
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		s.wg.Wait()
		s.announce(announcement{Bye: true})
		for _, sub := range s.subs {
			_ = sub.Unsubscribe()
		}
	})
}

// Run serves until ctx is done.
func (s *Service) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); s.applyLoop(ctx) }()
	go func() { defer wg.Done(); s.ctlLoop(ctx) }()
	go func() { defer wg.Done(); s.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); s.reloadLoop(ctx) }()
	wg.Wait()
	s.wg.Wait()
}

// Reconnected says the edge's NATS connection is back: the changes applied
// meanwhile never reached it, so its stored joins are read again.
func (s *Service) Reconnected() {
	if s.cfg.Store == nil {
		return
	}
	select {
	case s.reload <- struct{}{}:
	default: // one is pending already
	}
}

// reloadLoop reads the stored joins again after each reconnection, trying
// again while JetStream does not answer (it may come back after NATS).
func (s *Service) reloadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.reload:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(reloadSettle):
		}
		for try := 1; ; try++ {
			err := s.members.ReloadStored(ctx, reloadTimeout)
			if err == nil {
				break
			}
			s.cfg.Logger.Warn("rooms: stored joins not read again after a NATS reconnection", "try", try, "err", err)
			if try == reloadTries {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(reloadPause):
			}
		}
	}
}

// ctlLoop keeps the roster of live edges and hands each request to a
// coordinator, in arrival order: a request is handed over after every
// announcement that came before it.
func (s *Service) ctlLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.ctl:
			if m.Subject == s.cfg.Subjects.RoomsEdges() {
				s.heard(m.Data)
				continue
			}
			select {
			case s.sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			s.mu.Lock()
			closing := s.closing
			if !closing {
				s.wg.Add(1)
			}
			s.mu.Unlock()
			if closing {
				<-s.sem
				s.answer(m, wire.ControlAnswer{Error: &wire.ControlError{Code: 503, Message: "edge is shutting down; retry"}})
				continue
			}
			go func() {
				defer func() { <-s.sem; s.wg.Done() }()
				s.coordinate(m)
			}()
		}
	}
}

// heartbeatLoop announces the edge every heartbeatInterval. It is a loop
// of its own: ctlLoop waits when maxCoordinating requests are under way,
// and a heartbeat missed for peerTTL drops this edge from the others'
// rosters, which would then answer joins before this edge applied them.
func (s *Service) heartbeatLoop(ctx context.Context) {
	tick := time.NewTicker(heartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.announce(announcement{})
		}
	}
}

// heard records an announcement.
func (s *Service) heard(data []byte) {
	var a announcement
	if json.Unmarshal(data, &a) != nil || wire.ValidateID(a.Edge) != nil || a.Edge == s.cfg.EdgeID {
		return
	}
	s.mu.Lock()
	if a.Bye {
		delete(s.peers, a.Edge)
	} else {
		s.peers[a.Edge] = time.Now()
	}
	s.mu.Unlock()
	if a.Hello {
		s.announce(announcement{})
	}
}

// live returns the edges heard from within peerTTL, this one included, and
// forgets the others. During the edge's warm-up it waits for its end first.
func (s *Service) live(ctx context.Context) map[string]bool {
	if wait := warmUp - time.Since(s.started); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := map[string]bool{s.cfg.EdgeID: true}
	for id, seen := range s.peers {
		if now.Sub(seen) > peerTTL {
			delete(s.peers, id)
			continue
		}
		out[id] = true
	}
	return out
}

// metricFor returns the counter of a join or leave.
func (s *Service) count(ctx context.Context, join bool, result string) {
	c := s.leaves
	if join {
		c = s.joins
	}
	c.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}

// parseTarget reads "<kind>.<id>" (for conn "<edge>.<conn>") of a
// ctl.join/leave subject.
func parseTarget(rest string) (kind, key string, ok bool) {
	kind, key, _ = strings.Cut(rest, ".")
	if !validKind(kind) || key == "" {
		return "", "", false
	}
	if kind == wire.KindConn {
		edge, conn, ok := strings.Cut(key, ".")
		return kind, key, ok && wire.ValidateID(edge) == nil && wire.ValidateID(conn) == nil
	}
	return kind, key, wire.ValidateID(key) == nil
}
