// Package presence is the dispatcher's side of presence (DESIGN.md §9). Each
// dispatcher watches the presence KV bucket the edges write (see
// services/edge/internal/presence) and keeps an index of it, from which it
//
//   - answers <prefix>.presence.user.<u> and <prefix>.presence.group.<g>
//     (queue group: one replica answers each request);
//   - reaps the connections of an edge whose lease expired or changed
//     epoch: a compare-and-set purge of each record, and whoever wins it
//     publishes that connection's Client/disconnection {"code": 1006};
//   - fires Client/online for a user whose key an edge created pending: a
//     compare-and-set update of user.<u> that clears the mark, so exactly
//     one replica wins it, and the event does not depend on the edge
//     surviving the write;
//   - fires Client/offline for a user online (user.<u> exists) with no
//     connection for the grace: a compare-and-set purge of user.<u> on the
//     revision it saw, so exactly one party wins each transition, and an
//     edge adding a connection meanwhile (which touches user.<u>) wins over
//     it. A user's offline waits for its online.
//
// With presence off it answers every request with 503.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/presencekv"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Limits of the member list of a group answer.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
)

const (
	// workers run the compare-and-set purges of reaps and offline
	// transitions, so that a dead edge's thousands of records go quickly.
	workers = 16
	// opTimeout bounds one KV operation.
	opTimeout = 5 * time.Second
	// maxTick bounds the period of the reap and offline checks.
	maxTick = 250 * time.Millisecond
	// resyncEvery is how often the leases the index holds live are read
	// back from the bucket: a replica cut off from NATS longer than the
	// markers live (presencekv.MarkerTTL) missed the expiry of a dead
	// edge's lease, and learns it here.
	resyncEvery = 30 * time.Second
)

// Config is what the presence service needs.
type Config struct {
	Prefix string
	Queue  string // queue group of the answering subscriptions
	Mode   string // presencekv.Off, Memory or File
	Bucket string
	Grace  time.Duration // WS_PRESENCE_GRACE
	Logger *slog.Logger
	Meter  metric.Meter // nil: no metrics
	// Inbound: reliable inbound is on (WS_INBOUND), so events go through
	// the inbound stream like the edges' connection events.
	Inbound bool
}

// Service answers presence requests and keeps the shared presence right.
type Service struct {
	cfg  Config // static
	subj wire.Subjects
	nc   *nats.Conn
	kv   jetstream.KeyValue // nil when off

	mu sync.Mutex
	x  *index // owned by mu

	subs   []*nats.Subscription
	tasks  chan func(context.Context)
	kick   chan struct{} // a user key waits for its online: claim it now
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reaped   metric.Int64Counter
	online   metric.Int64Counter
	offline  metric.Int64Counter
	failures metric.Int64Counter
}

// Start subscribes the presence subjects and, with presence on, opens the
// bucket and starts watching it; Close stops everything.
func Start(ctx context.Context, nc *nats.Conn, cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	s := &Service{cfg: cfg, subj: wire.NewSubjects(cfg.Prefix), nc: nc, x: newIndex(), kick: make(chan struct{}, 1)}
	s.metrics()
	if cfg.Mode != presencekv.Off {
		js, err := jetstream.New(nc)
		if err != nil {
			return nil, fmt.Errorf("presence: %w", err)
		}
		if s.kv, err = presencekv.Open(ctx, js, cfg.Bucket, cfg.Mode); err != nil {
			return nil, err
		}
		w, err := s.kv.WatchAll(context.Background())
		if err != nil {
			return nil, fmt.Errorf("presence: watch bucket: %w", err)
		}
		var run context.Context
		run, s.cancel = context.WithCancel(context.Background())
		s.tasks = make(chan func(context.Context), workers)
		s.wg.Add(2 + workers)
		go func() { defer s.wg.Done(); s.watch(run, w) }()
		go func() { defer s.wg.Done(); s.tick(run) }()
		for range workers {
			go func() {
				defer s.wg.Done()
				for task := range s.tasks {
					task(run)
				}
			}()
		}
	}
	for _, sub := range []struct {
		subject string
		answer  func(*nats.Msg) []byte
	}{
		{s.subj.PresenceUser("*"), s.answerUser},
		{s.subj.PresenceGroup("*"), s.answerGroup},
	} {
		answer := sub.answer
		ns, err := nc.QueueSubscribe(sub.subject, cfg.Queue, func(m *nats.Msg) {
			if m.Reply != "" {
				_ = m.Respond(answer(m))
			}
		})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("presence: subscribe %s: %w", sub.subject, err)
		}
		s.subs = append(s.subs, ns)
	}
	return s, nil
}

// Close unsubscribes and stops the watch and the workers.
func (s *Service) Close() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe()
	}
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
	}
}

func (s *Service) metrics() {
	m := s.cfg.Meter
	s.reaped = telemetry.Must(m.Int64Counter("wsgate.dispatcher.presence.reaped",
		metric.WithDescription("Connections of dead edges this replica removed from presence (and published Client/disconnection 1006 for).")))
	s.online = telemetry.Must(m.Int64Counter("wsgate.dispatcher.presence.online_events",
		metric.WithDescription("Client/online events this replica fired.")))
	s.offline = telemetry.Must(m.Int64Counter("wsgate.dispatcher.presence.offline_events",
		metric.WithDescription("Client/offline events this replica fired.")))
	s.failures = telemetry.Must(m.Int64Counter("wsgate.dispatcher.presence.errors",
		metric.WithDescription("Presence KV operations or publications that failed (lost compare-and-set races not counted).")))
	// At 0 from the start, so that dashboards and alerts see them before
	// the first event.
	for _, c := range []metric.Int64Counter{s.reaped, s.online, s.offline, s.failures} {
		c.Add(context.Background(), 0)
	}
	_ = telemetry.Must(m.Int64ObservableGauge("wsgate.dispatcher.presence.connections",
		metric.WithDescription("Connections in presence, as this replica's index holds them."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			s.mu.Lock()
			n := len(s.x.conns)
			s.mu.Unlock()
			o.Observe(int64(n))
			return nil
		})))
	_ = telemetry.Must(m.Int64ObservableGauge("wsgate.dispatcher.presence.users",
		metric.WithDescription("Users with at least one connection, as this replica's index holds them."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			s.mu.Lock()
			n := len(s.x.users) - len(s.x.zero)
			s.mu.Unlock()
			o.Observe(int64(n))
			return nil
		})))
}

// watch folds every change of the bucket into the index.
func (s *Service) watch(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			s.mu.Lock()
			if e == nil {
				s.x.markLoaded()
				s.cfg.Logger.Info("presence loaded", "connections", len(s.x.conns), "users", len(s.x.users))
			} else {
				s.x.apply(e, time.Now())
			}
			claim := len(s.x.pending) > 0
			s.mu.Unlock()
			if claim {
				select {
				case s.kick <- struct{}{}:
				default:
				}
			}
		}
	}
}

// tick hands the due reaps and user transitions to the workers: every
// period, and the online claims also as soon as the watch sees a pending
// user key.
func (s *Service) tick(ctx context.Context) {
	period := min(maxTick, s.cfg.Grace/4)
	if period <= 0 {
		period = maxTick
	}
	t := time.NewTicker(period)
	defer t.Stop()
	defer close(s.tasks)
	lastResync := time.Now()
	for {
		all := true
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
			all = false
		}
		if all && time.Since(lastResync) >= resyncEvery {
			lastResync = time.Now()
			s.resync(ctx)
		}
		for _, task := range s.due(time.Now(), all) {
			select {
			case s.tasks <- task:
			case <-ctx.Done():
				return
			}
		}
	}
}

// resync reads back every lease the index holds live; one that is gone
// from the bucket expired unseen, and its edge's connections are reaped.
func (s *Service) resync(ctx context.Context) {
	s.mu.Lock()
	live := map[string]string{}
	for id, ed := range s.x.edges {
		if ed.epoch != "" {
			live[id] = ed.epoch
		}
	}
	s.mu.Unlock()
	for id, epoch := range live {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		_, err := s.kv.Get(gctx, wire.PresenceEdgeKey(id))
		cancel()
		if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
			continue // there, or the bucket cannot tell now
		}
		s.mu.Lock()
		s.x.expire(id, epoch)
		s.mu.Unlock()
	}
}

// due collects the work the index calls for now, marking it under way:
// the online claims, and with all the reaps and offline transitions too.
func (s *Service) due(now time.Time, all bool) []func(context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var tasks []func(context.Context)
	for u := range s.x.pending {
		if u.claiming {
			continue
		}
		u.claiming = true
		id, rev, key, rec := u.id, u.keyRev, u.key, s.x.onlineConn(u)
		tasks = append(tasks, func(ctx context.Context) { s.goOnline(ctx, u, id, rev, key, rec) })
	}
	if !all {
		return tasks
	}
	for c := range s.x.orphan {
		if c.reaping {
			continue
		}
		c.reaping = true
		key, rev, rec := c.key, c.rev, c.rec
		tasks = append(tasks, func(ctx context.Context) { s.reap(ctx, c, key, rev, rec) })
	}
	for u := range s.x.zero {
		if u.offlining || u.key.Pending || now.Sub(u.zeroSince) < s.cfg.Grace {
			continue
		}
		u.offlining = true
		id, rev, last := u.id, u.keyRev, u.last
		tasks = append(tasks, func(ctx context.Context) { s.goOffline(ctx, u, id, rev, last) })
	}
	return tasks
}

// reap removes the record of a connection whose edge died; the winner of
// the compare-and-set publishes its end.
func (s *Service) reap(ctx context.Context, c *conn, key string, rev uint64, rec wire.PresenceConn) {
	kctx, cancel := context.WithTimeout(ctx, opTimeout) // the bucket's; an event may take longer (emit)
	defer cancel()
	err := s.kv.Purge(kctx, key, jetstream.LastRevision(rev), jetstream.PurgeTTL(presencekv.MarkerTTL))
	switch {
	case err == nil:
		s.reaped.Add(ctx, 1)
		groups := rec.Groups
		if groups == nil {
			groups = []string{}
		}
		env := wire.Envelope{
			Action: wire.ActionDisconnection, Details: json.RawMessage(`{"code":1006}`),
			User: rec.User, Session: rec.Session, Groups: groups, Language: rec.Language,
			Connection: rec.Connection, Edge: rec.Edge, TS: time.Now().UTC(),
		}
		if err := s.emit(ctx, &env, "disconnection."+rec.Connection); err != nil {
			s.failures.Add(ctx, 1)
			s.cfg.Logger.Warn("presence: Client/disconnection not published", "conn", rec.Connection, "err", err)
		}
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Another replica reaped it, or its edge deleted it: the watch
		// takes it out of the index.
	default:
		s.failures.Add(ctx, 1)
		s.cfg.Logger.Warn("presence: reap failed; retrying", "conn", rec.Connection, "err", err)
		s.mu.Lock()
		c.reaping = false
		s.mu.Unlock()
	}
}

// goOnline claims the online transition of a user whose key an edge created
// pending: the winner of the compare-and-set update that clears the mark
// fires Client/online for rec, the connection that brought the user online.
// A touch of the key meanwhile (another connection) makes the update fail,
// and the watch files the user again with the new revision.
func (s *Service) goOnline(ctx context.Context, u *user, id string, rev uint64, key wire.PresenceUserState, rec wire.PresenceConn) {
	kctx, cancel := context.WithTimeout(ctx, opTimeout) // the bucket's; an event may take longer (emit)
	defer cancel()
	key.Pending = false
	data, _ := json.Marshal(key)
	claimed, err := s.kv.Update(kctx, wire.PresenceUserKey(id), data, rev)
	switch {
	case err == nil:
		details, _ := json.Marshal(map[string]string{"user": id})
		groups := rec.Groups
		if groups == nil {
			groups = []string{}
		}
		env := wire.Envelope{
			Action: wire.ActionOnline, Details: details,
			User: id, Session: rec.Session, Groups: groups, Language: rec.Language,
			Connection: rec.Connection, Edge: rec.Edge, TS: time.Now().UTC(),
		}
		if err := s.emit(ctx, &env, "online."+wire.PresenceKeyID(id)+"."+strconv.FormatUint(claimed, 10)); err != nil {
			s.failures.Add(ctx, 1)
			s.cfg.Logger.Warn("presence: Client/online not published", "user", id, "err", err)
			return
		}
		s.online.Add(ctx, 1)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
		// Touched, gone or claimed by another replica: the watch tells.
	default:
		s.failures.Add(ctx, 1)
		s.cfg.Logger.Warn("presence: online transition failed; retrying", "user", id, "err", err)
		s.mu.Lock()
		u.claiming = false
		s.mu.Unlock()
	}
}

// goOffline ends a user's online state: the winner of the compare-and-set
// purge of user.<u> fires Client/offline. A connection added meanwhile has
// changed the revision, and the purge fails.
func (s *Service) goOffline(ctx context.Context, u *user, id string, rev uint64, last wire.PresenceConn) {
	kctx, cancel := context.WithTimeout(ctx, opTimeout) // the bucket's; an event may take longer (emit)
	defer cancel()
	err := s.kv.Purge(kctx, wire.PresenceUserKey(id), jetstream.LastRevision(rev), jetstream.PurgeTTL(presencekv.MarkerTTL))
	switch {
	case err == nil:
		details, _ := json.Marshal(map[string]string{"user": id})
		groups := last.Groups
		if groups == nil {
			groups = []string{}
		}
		env := wire.Envelope{
			Action: wire.ActionOffline, Details: details,
			User: id, Session: last.Session, Groups: groups, Language: last.Language,
			Connection: last.Connection, Edge: last.Edge, TS: time.Now().UTC(),
		}
		if err := s.emit(ctx, &env, "offline."+wire.PresenceKeyID(id)+"."+strconv.FormatUint(rev, 10)); err != nil {
			s.failures.Add(ctx, 1)
			s.cfg.Logger.Warn("presence: Client/offline not published", "user", id, "err", err)
			return
		}
		s.offline.Add(ctx, 1)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Back online, or another replica won: the watch tells.
	default:
		s.failures.Add(ctx, 1)
		s.cfg.Logger.Warn("presence: offline transition failed; retrying", "user", id, "err", err)
		s.mu.Lock()
		u.offlining = false
		s.mu.Unlock()
	}
}

// emitBackoff is the wait before each try of an event's publish: the
// transition is claimed in the bucket already, so no replica fires it
// again; the event's msgID makes a try that was stored after all a
// duplicate the stream drops.
var emitBackoff = []time.Duration{0, 250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}

// emit publishes a lifecycle event: every event the dispatcher fires leaves
// through here.
func (s *Service) emit(ctx context.Context, env *wire.Envelope, msgID string) error {
	var inq string
	if s.cfg.Inbound {
		inq = s.subj.Inq(env.Action)
	}
	data := wire.AppendEnvelope(nil, env)
	var err error
	for _, wait := range emitBackoff {
		if wait > 0 {
			s.cfg.Logger.Warn("presence: event not published; trying again", "action", env.Action, "user", env.User, "in", wait, "err", err)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return err
			}
		}
		if err = presencekv.PublishEvent(ctx, s.nc, data, msgID, s.subj.In(env.Action), inq); err == nil {
			return nil
		}
	}
	return err
}

// unavailable is the answer while presence cannot be served.
func (s *Service) unavailable() []byte {
	if s.kv == nil {
		return wire.PresenceFailure(wire.CodeUnavailable, "presence is off (WS_PRESENCE=off)")
	}
	return wire.PresenceFailure(wire.CodeUnavailable, "presence is loading, try again")
}

func (s *Service) answerUser(m *nats.Msg) []byte {
	id := strings.TrimPrefix(m.Subject, s.subj.PresenceUser(""))
	if err := wire.ValidateID(id); err != nil {
		return wire.PresenceFailure(wire.CodeBadRequest, "bad user id: "+err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv == nil || !s.x.loaded {
		return s.unavailable()
	}
	data, _ := json.Marshal(s.x.userAnswer(id))
	return data
}

func (s *Service) answerGroup(m *nats.Msg) []byte {
	id := strings.TrimPrefix(m.Subject, s.subj.PresenceGroup(""))
	if err := wire.ValidateID(id); err != nil {
		return wire.PresenceFailure(wire.CodeBadRequest, "bad group id: "+err.Error())
	}
	limit := DefaultLimit
	if body := strings.TrimSpace(string(m.Data)); body != "" && body != "null" {
		var req wire.PresenceGroupRequest
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return wire.PresenceFailure(wire.CodeBadRequest, `payload must be empty or {"limit": <n>}`)
		}
		if req.Limit != nil {
			if *req.Limit < 0 {
				return wire.PresenceFailure(wire.CodeBadRequest, "limit must not be negative")
			}
			limit = min(*req.Limit, MaxLimit)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv == nil || !s.x.loaded {
		return s.unavailable()
	}
	data, _ := json.Marshal(s.x.groupAnswer(id, limit))
	return data
}
