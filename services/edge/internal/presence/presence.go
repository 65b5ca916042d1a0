// Package presence records the edge's authenticated connections in the
// presence KV bucket (DESIGN.md §9) under one lease per edge process.
//
// Key layout (api/wire): edge.<edge> holds the lease, written with a
// per-message TTL of the lease and renewed every lease/3 by compare-and-set;
// conn.<edge>.<conn> holds each connection, tagged with the lease's epoch;
// user.<user> exists while the user is online, created "pending" by the edge
// whose connection brings the user online. The edge fires no user event:
// it could die between writing a key and publishing. The dispatchers, which
// outlive it, fire Client/online (claiming a pending user key) and
// Client/offline, and reap the connections of an edge whose lease expired
// (or whose epoch changed); see services/dispatcher/internal/presence.
package presence

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/internal/presencekv"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

const (
	// shards is the number of goroutines that apply renewals and ends:
	// each connection's go to one of them, in order; KV round trips of
	// different connections overlap. Adds run in the caller.
	shards = 16
	// shardQueue bounds the operations waiting per shard; a full queue
	// makes the connection's reader wait (it must not drop an end).
	shardQueue = 1024
	// opTimeout bounds one KV operation.
	opTimeout = 5 * time.Second
	// touchAttempts bounds the compare-and-set rounds on user.<user>.
	touchAttempts = 8
)

// Config is what the writer needs.
type Config struct {
	EdgeID string
	Bucket string
	Mode   string        // presencekv.Memory or presencekv.File
	Lease  time.Duration // TTL of edge.<edge>; renewed every Lease/3
	// OnLeaseLost is called (from the lease goroutine, so it must not
	// block) when the lease was found expired while this edge lived (a
	// partition, a stall): the dispatchers have reaped its connections,
	// which should reconnect to be recorded again.
	OnLeaseLost func()
	Logger      *slog.Logger
	Meter       metric.Meter // nil: no metrics
}

// Writer keeps one edge's presence. Add, Changed and Remove may be called
// from any goroutine; a connection's Changed and Remove apply in call
// order, after its Add returned.
type Writer struct {
	cfg    Config // static
	js     jetstream.JetStream
	kv     jetstream.KeyValue // set by Start
	seed   maphash.Seed       // static
	shards []chan op          // static after Start
	wg     sync.WaitGroup     // the shard and lease goroutines
	stop   chan struct{}      // closed by Close: the lease goroutine ends

	epoch    atomic.Pointer[string] // the current lease's epoch
	leaseRev uint64                 // owned by the lease goroutine (and Start)

	mu     sync.RWMutex // held to send to shards (read) and to close them (write)
	closed bool         // owned by mu

	recMu sync.Mutex
	recs  map[*hub.Client]record // the recorded connections; owned by recMu

	entries  atomic.Int64 // connections recorded now
	renewals metric.Int64Counter
	losses   metric.Int64Counter
	failures metric.Int64Counter
}

// record is what the writer keeps of a recorded connection.
type record struct {
	rev   uint64 // of its conn.<edge>.<conn> key
	since time.Time
}

type opKind int

const (
	opChange opKind = iota
	opRemove
)

type op struct {
	kind  opKind
	c     *hub.Client
	rec   wire.PresenceConn
	ended func() // opRemove: publishes the connection's end
}

// New returns a writer on nc; Start opens the bucket and takes the lease.
func New(nc *nats.Conn, cfg Config) (*Writer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Lease < time.Second {
		return nil, fmt.Errorf("presence: lease %s is shorter than 1s, the least TTL NATS keeps", cfg.Lease)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("presence: %w", err)
	}
	w := &Writer{cfg: cfg, js: js, seed: maphash.MakeSeed(), stop: make(chan struct{}), recs: map[*hub.Client]record{}}
	m := cfg.Meter
	w.renewals = telemetry.Must(m.Int64Counter("wsgate.edge.presence.lease_renewals",
		metric.WithDescription("Renewals of this edge's presence lease.")))
	w.losses = telemetry.Must(m.Int64Counter("wsgate.edge.presence.lease_losses",
		metric.WithDescription("Times this edge found its presence lease expired while it lived (its connections were reaped).")))
	w.failures = telemetry.Must(m.Int64Counter("wsgate.edge.presence.write_errors",
		metric.WithDescription("Presence KV writes that failed (not counting lost compare-and-set races).")))
	// At 0 from the start, so that dashboards and alerts see them before
	// the first event.
	for _, c := range []metric.Int64Counter{w.renewals, w.losses, w.failures} {
		c.Add(context.Background(), 0)
	}
	_ = telemetry.Must(m.Int64ObservableGauge("wsgate.edge.presence.connections",
		metric.WithDescription("Connections this edge has recorded in the presence bucket."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(w.entries.Load())
			return nil
		})))
	return w, nil
}

// Start opens (or creates) the bucket, takes a new lease epoch and starts
// the writer goroutines; Close stops them.
func (w *Writer) Start(ctx context.Context) error {
	kv, err := presencekv.Open(ctx, w.js, w.cfg.Bucket, w.cfg.Mode)
	if err != nil {
		return err
	}
	w.kv = kv
	if err := w.newLease(ctx); err != nil {
		return err
	}
	w.shards = make([]chan op, shards)
	for i := range w.shards {
		ch := make(chan op, shardQueue)
		w.shards[i] = ch
		w.wg.Add(1)
		go func() { defer w.wg.Done(); w.work(ch) }()
	}
	w.wg.Add(1)
	go func() { defer w.wg.Done(); w.renew() }()
	return nil
}

// Epoch is the current lease epoch.
func (w *Writer) Epoch() string { return *w.epoch.Load() }

// Close finishes the queued operations, stops renewing and deletes the
// lease, so the dispatchers know at once that this edge holds nothing.
// Call it after every connection has ended.
func (w *Writer) Close(ctx context.Context) {
	w.mu.Lock()
	if w.shards == nil || w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.stop)
	for _, ch := range w.shards {
		close(ch)
	}
	w.mu.Unlock()
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		w.cfg.Logger.Warn("presence writes did not finish in time")
		return
	}
	w.recMu.Lock()
	w.entries.Add(-int64(len(w.recs)))
	clear(w.recs)
	w.recMu.Unlock()
	if err := w.kv.Purge(ctx, wire.PresenceEdgeKey(w.cfg.EdgeID), jetstream.LastRevision(w.leaseRev),
		jetstream.PurgeTTL(presencekv.MarkerTTL)); err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		w.cfg.Logger.Warn("presence lease not released", "err", err)
	}
}

// newEpoch is a random lease epoch.
func newEpoch() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	n := uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
	return strconv.FormatUint(n, 36)
}

// newLease writes edge.<edge> with a fresh epoch, replacing whatever a
// previous process of this edge left: its connections, of another epoch,
// are reaped by the dispatchers.
func (w *Writer) newLease(ctx context.Context) error {
	epoch := newEpoch()
	data, _ := json.Marshal(wire.PresenceLease{Epoch: epoch, Since: time.Now().UTC()})
	ack, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: presencekv.Subject(w.cfg.Bucket, wire.PresenceEdgeKey(w.cfg.EdgeID)), Data: data},
		jetstream.WithMsgTTL(w.cfg.Lease))
	if err != nil {
		return fmt.Errorf("presence: take lease: %w", err)
	}
	w.leaseRev = ack.Sequence
	w.epoch.Store(&epoch)
	w.cfg.Logger.Info("presence lease taken", "epoch", epoch, "lease", w.cfg.Lease.String())
	return nil
}

// renew extends the lease every Lease/3 by compare-and-set on its last
// revision: a lease that expired meanwhile (its key is a marker now) is
// lost, and a new epoch starts.
func (w *Writer) renew() {
	t := time.NewTicker(w.cfg.Lease / 3)
	defer t.Stop()
	subject := presencekv.Subject(w.cfg.Bucket, wire.PresenceEdgeKey(w.cfg.EdgeID))
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.Lease/3)
		data, _ := json.Marshal(wire.PresenceLease{Epoch: w.Epoch(), Since: time.Now().UTC()})
		ack, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data},
			jetstream.WithMsgTTL(w.cfg.Lease), jetstream.WithExpectLastSequencePerSubject(w.leaseRev))
		switch {
		case err == nil:
			w.leaseRev = ack.Sequence
			w.renewals.Add(ctx, 1)
		case isWrongSequence(err):
			w.losses.Add(ctx, 1)
			w.cfg.Logger.Error("presence lease lost: its connections were reaped; starting a new epoch", "epoch", w.Epoch())
			if err := w.newLease(ctx); err != nil {
				w.failures.Add(ctx, 1)
				w.cfg.Logger.Warn("presence lease", "err", err)
			} else if w.cfg.OnLeaseLost != nil {
				w.cfg.OnLeaseLost()
			}
		default:
			w.failures.Add(ctx, 1)
			w.cfg.Logger.Warn("presence lease not renewed", "err", err)
		}
		cancel()
	}
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// groupsOf is the groups a connection's presence record lists: its token's
// and its joined ones (DESIGN §9).
func groupsOf(c *hub.Client) []string { return c.Groups() }

// record is c's presence record under the current epoch.
func (w *Writer) record(c *hub.Client, since time.Time) wire.PresenceConn {
	id := c.Identity()
	groups := groupsOf(c)
	if groups == nil {
		groups = []string{}
	}
	return wire.PresenceConn{
		User: id.User, Session: id.Session, Groups: groups, Language: id.Language,
		Connection: c.Connection, Edge: w.cfg.EdgeID, Epoch: w.Epoch(), Since: since,
	}
}

// Add records c, which has just been authenticated (with a user), and
// returns once the record is stored (or could not be): the gateway answers
// ok after it, so that every connection a client was told is live is in
// presence, and leaves it with a Client/disconnection even if this edge
// dies. It runs in the caller, so that a storm of authentications writes
// with as many round trips in flight as there are callers.
func (w *Writer) Add(ctx context.Context, c *hub.Client) {
	w.mu.RLock()
	closed := w.closed
	w.mu.RUnlock()
	if closed {
		return
	}
	// A time of its own: the authentication may have used most of ctx's.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	rec := w.record(c, time.Now().UTC())
	key := wire.PresenceConnKey(w.cfg.EdgeID, c.ID)
	rev, err := w.put(ctx, key, rec, 0)
	if err != nil {
		w.failures.Add(ctx, 1)
		w.cfg.Logger.Warn("presence: connection not recorded", "conn", c.Connection, "err", err)
		// A create that timed out may have been stored all the same: a
		// record nobody knows of would keep the user online for as long as
		// this edge lives. Its revision, if it is there, lets Remove
		// delete it; if even that cannot be read, Remove deletes it blind.
		rev = w.storedRev(key, c)
		if rev == 0 {
			return
		}
		// The user's key next, with time of its own: the create's is spent.
		cancel()
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		defer cancel()
	}
	w.recMu.Lock()
	w.recs[c] = record{rev, rec.Since}
	w.recMu.Unlock()
	w.entries.Add(1)
	w.touchUser(ctx, rec)
	// A change of its groups (a join applied meanwhile) found no record to
	// update and was dropped: write the groups it has now.
	if !slices.Equal(rec.Groups, groupsOf(c)) {
		w.Changed(c)
	}
}

// storedRev reads the revision of c's record at key after its create
// failed: 0 when it is not stored, revUnknown when that cannot be told.
func (w *Writer) storedRev(key string, c *hub.Client) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	e, err := w.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0
	case err != nil:
		return revUnknown
	}
	var rec wire.PresenceConn
	if json.Unmarshal(e.Value(), &rec) != nil || rec.Connection != c.Connection {
		return 0
	}
	return e.Revision()
}

// revUnknown is the revision of a record whose create failed in a way that
// may have stored it: Remove deletes it whatever its revision, and changes
// are not written.
const revUnknown = ^uint64(0)

// Changed rewrites c's record after its identity changed (a renewal).
func (w *Writer) Changed(c *hub.Client) {
	w.enqueue(op{kind: opChange, c: c, rec: w.record(c, time.Time{})})
}

// Remove deletes c's record, then calls ended, which publishes the
// connection's end, unless a dispatcher reaped the record first (and
// published that end itself): either way the end is published once.
func (w *Writer) Remove(c *hub.Client, ended func()) {
	w.enqueue(op{kind: opRemove, c: c, ended: ended})
}

func (w *Writer) enqueue(o op) {
	w.mu.RLock()
	if !w.closed {
		w.shards[maphash.String(w.seed, o.c.ID)%shards] <- o
		w.mu.RUnlock()
		return
	}
	w.mu.RUnlock()
	if o.ended != nil {
		o.ended() // too late to record anything: the end still goes out
	}
}

// work applies one shard's operations in order.
func (w *Writer) work(ops <-chan op) {
	for o := range ops {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		key := wire.PresenceConnKey(w.cfg.EdgeID, o.c.ID)
		w.recMu.Lock()
		r, ok := w.recs[o.c]
		if o.kind == opRemove {
			delete(w.recs, o.c)
		}
		w.recMu.Unlock()
		switch o.kind {
		case opChange:
			if !ok || r.rev == revUnknown {
				break
			}
			o.rec.Since = r.since
			rev, err := w.put(ctx, key, o.rec, r.rev)
			if err != nil {
				if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
					w.failures.Add(ctx, 1)
				}
				w.cfg.Logger.Warn("presence: connection record not updated", "conn", o.c.Connection, "err", err)
				break
			}
			w.recMu.Lock()
			w.recs[o.c] = record{rev, r.since}
			w.recMu.Unlock()
		case opRemove:
			if ok {
				w.entries.Add(-1)
				opts := []jetstream.KVDeleteOpt{jetstream.PurgeTTL(presencekv.MarkerTTL)}
				if r.rev != revUnknown {
					opts = append(opts, jetstream.LastRevision(r.rev))
				}
				err := w.kv.Purge(ctx, key, opts...)
				if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
					// A dispatcher reaped it (the lease had expired) and
					// published the end.
					break
				}
				if err != nil {
					w.failures.Add(ctx, 1)
					w.cfg.Logger.Warn("presence: connection record not deleted", "conn", o.c.Connection, "err", err)
				}
			}
			o.ended()
		}
		cancel()
	}
}

// put writes a connection record: created when rev is 0, else updated from rev.
func (w *Writer) put(ctx context.Context, key string, rec wire.PresenceConn, rev uint64) (uint64, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	if rev == 0 {
		return w.kv.Create(ctx, key, data)
	}
	return w.kv.Update(ctx, key, data, rev)
}

// touchUser makes sure user.<user> exists and changes its revision, so that
// a dispatcher about to fire Client/offline (a compare-and-set delete on the
// revision it saw) loses to this new connection. Creating the key is the
// online transition: it is created pending, and the dispatcher that claims
// it fires Client/online; a touch keeps the pending mark as it found it.
func (w *Writer) touchUser(ctx context.Context, rec wire.PresenceConn) {
	key := wire.PresenceUserKey(rec.User)
	st := wire.PresenceUserState{User: rec.User, Connection: rec.Connection, Since: time.Now().UTC(), Pending: true}
	for range touchAttempts {
		data, _ := json.Marshal(st)
		if _, err := w.kv.Create(ctx, key, data); err == nil {
			return
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			w.failures.Add(ctx, 1)
			w.cfg.Logger.Warn("presence: user not marked online", "user", rec.User, "err", err)
			return
		}
		e, err := w.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // went offline meanwhile: create it again
		}
		if err != nil {
			w.failures.Add(ctx, 1)
			w.cfg.Logger.Warn("presence: user not touched", "user", rec.User, "err", err)
			return
		}
		var was wire.PresenceUserState
		touched := st
		touched.Pending = json.Unmarshal(e.Value(), &was) == nil && was.Pending
		data, _ = json.Marshal(touched)
		if _, err := w.kv.Update(ctx, key, data, e.Revision()); err == nil {
			return
		} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			w.failures.Add(ctx, 1)
			w.cfg.Logger.Warn("presence: user not touched", "user", rec.User, "err", err)
			return
		}
	}
	w.cfg.Logger.Warn("presence: user key kept changing; not touched", "user", rec.User)
}
