package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/internal/presencekv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func startService(t *testing.T, nc *nats.Conn, cfg Config) *Service {
	t.Helper()
	cfg.Prefix, cfg.Queue = "ws", "q"
	if cfg.Bucket == "" {
		cfg.Bucket = "p"
	}
	ctx, cancel := context.WithTimeout(context.Background(), natstest.Wait)
	defer cancel()
	s, err := Start(ctx, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func request(t *testing.T, nc *nats.Conn, subject, payload, schema string, into any) {
	t.Helper()
	m, err := nc.Request(subject, []byte(payload), natstest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	natstest.Check(t, schema, m.Data)
	if err := json.Unmarshal(m.Data, into); err != nil {
		t.Fatal(err)
	}
}

// TestPresenceOff_Answers503: with WS_PRESENCE=off every request is
// answered {"error": {"code": 503}}, and a bad id 400.
// Fails when Start subscribes nothing with presence off, or the ids are
// not checked first.
func TestPresenceOff_Answers503(t *testing.T) {
	ns := natstest.RunServer(t)
	nc := natstest.Connect(t, ns)
	startService(t, nc, Config{Mode: presencekv.Off})
	for subject, code := range map[string]int{
		"ws.presence.user.42": 503, "ws.presence.group.room-5": 503,
		"ws.presence.user.a!b": 400, "ws.presence.group.room%5": 400,
	} {
		var e wire.PresenceError
		request(t, nc, subject, "", schemacheck.PresenceError, &e)
		if e.Error.Code != code {
			t.Fatalf("%s: %+v, want %d", subject, e, code)
		}
	}
}

// bucket starts a NATS server with JetStream and opens on it the presence
// bucket "p" in memory, as the edges and the service do.
func bucket(t *testing.T) (*nats.Conn, jetstream.KeyValue) {
	t.Helper()
	nc := natstest.Connect(t, natstest.RunJetStream(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := presencekv.Open(context.Background(), js, "p", presencekv.Memory)
	if err != nil {
		t.Fatal(err)
	}
	return nc, kv
}

// put writes a presence key as an edge would.
func put(t *testing.T, kv jetstream.KeyValue, key string, v any) uint64 {
	t.Helper()
	data, _ := json.Marshal(v)
	rev, err := kv.Put(context.Background(), key, data)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestOffline_OnceWithTwoReplicasAndNotWhileConnected: two replicas watch
// users online (user.<u> exists) with no connection; exactly one fires each
// Client/offline after the grace (escaped ids too); a user with a
// connection stays online. Fails when goOffline purges without LastRevision
// (both replicas win), or the index does not count a user's connections.
func TestOffline_OnceWithTwoReplicasAndNotWhileConnected(t *testing.T) {
	nc, kv := bucket(t)
	ctx := context.Background()
	var offline atomic.Int32
	if _, err := nc.Subscribe("ws.in."+wire.ActionOffline, func(m *nats.Msg) {
		natstest.Check(t, schemacheck.Envelope, m.Data)
		offline.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	now := time.Now().UTC()
	put(t, kv, wire.PresenceEdgeKey("e1"), wire.PresenceLease{Epoch: "x", Since: now})
	put(t, kv, wire.PresenceConnKey("e1", "c1"), wire.PresenceConn{User: "bob", Groups: []string{"g"}, Connection: "e1.c1", Edge: "e1", Epoch: "x", Since: now})
	put(t, kv, wire.PresenceUserKey("bob"), wire.PresenceUserState{User: "bob", Connection: "e1.c1", Since: now})
	put(t, kv, wire.PresenceUserKey("a@b"), wire.PresenceUserState{User: "a@b", Connection: "e1.c0", Since: now})
	const grace = 500 * time.Millisecond
	startService(t, nc, Config{Mode: presencekv.Memory, Grace: grace})
	startService(t, nc, Config{Mode: presencekv.Memory, Grace: grace})

	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if _, err := kv.Get(ctx, wire.PresenceUserKey("a@b")); err == nil {
			return errNotYet
		}
		return nil
	})
	var g wire.PresenceGroupAnswer
	request(t, nc, "ws.presence.group.g", "", schemacheck.PresenceGroup, &g)
	if g.Users != 1 || g.Connections != 1 {
		t.Fatalf("group g: %+v", g)
	}
	// bob, with a connection, stays; a@b's offline fired once: a third
	// user's offline, later, bounds the wait for a duplicate.
	put(t, kv, wire.PresenceUserKey("zed"), wire.PresenceUserState{User: "zed", Connection: "e1.c9", Since: now})
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if offline.Load() < 2 {
			return errNotYet
		}
		return nil
	})
	if n := offline.Load(); n != 2 {
		t.Fatalf("%d Client/offline for 2 users", n)
	}
	if _, err := kv.Get(ctx, wire.PresenceUserKey("bob")); err != nil {
		t.Fatalf("bob, connected, went offline: %v", err)
	}
}

var errNotYet = errors.New("not yet")

func TestUnescapeReversesKeyID(t *testing.T) {
	for _, id := range []string{"42", "a@b+c~d:e=f", "=40", "x=", "=4"} {
		if got := unescape(wire.PresenceKeyID(id)); got != id {
			t.Errorf("%q: got %q", id, got)
		}
	}
}

// TestTransitionsAreCompareAndSet: two replicas that decided on the same
// revision both try to reap a connection, to take a user offline and to
// bring a pending user online; each event goes out once. Fails when reap
// or goOffline purge without jetstream.LastRevision, or goOnline updates
// without it.
func TestTransitionsAreCompareAndSet(t *testing.T) {
	nc, kv := bucket(t)
	ctx := context.Background()
	var ends, online, offline, marker atomic.Int32
	if _, err := nc.Subscribe("ws.in.*", func(m *nats.Msg) {
		natstest.Check(t, schemacheck.Envelope, m.Data)
		env, _ := wire.DecodeEnvelope(m.Data)
		switch {
		case env.User == "m":
			marker.Add(1)
		case env.Action == wire.ActionDisconnection:
			ends.Add(1)
		case env.Action == wire.ActionOnline:
			online.Add(1)
		case env.Action == wire.ActionOffline:
			offline.Add(1)
		}
	}); err != nil {
		t.Fatal(err)
	}
	rec := wire.PresenceConn{User: "bob", Groups: []string{}, Connection: "e1.c1", Edge: "e1", Epoch: "x", Since: time.Now().UTC()}
	connRev := put(t, kv, wire.PresenceConnKey("e1", "c1"), rec)
	userRev := put(t, kv, wire.PresenceUserKey("bob"), wire.PresenceUserState{User: "bob", Connection: "e1.c1"})
	a := startService(t, nc, Config{Mode: presencekv.Memory, Grace: time.Hour})
	b := startService(t, nc, Config{Mode: presencekv.Memory, Grace: time.Hour})
	annRec := wire.PresenceConn{User: "ann", Groups: []string{}, Connection: "e1.c2", Edge: "e1", Epoch: "x", Since: time.Now().UTC()}
	annKey := wire.PresenceUserState{User: "ann", Connection: "e1.c2", Pending: true}
	annRev := put(t, kv, wire.PresenceUserKey("ann"), annKey)
	for _, s := range []*Service{a, b} {
		s.reap(ctx, &conn{}, wire.PresenceConnKey("e1", "c1"), connRev, rec)
		s.goOffline(ctx, &user{}, "bob", userRev, rec)
		s.goOnline(ctx, &user{}, "ann", annRev, annKey, annRec)
	}
	_ = nc.Flush()
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if ends.Load() < 1 || offline.Load() < 1 || online.Load() < 1 {
			return errNotYet
		}
		return nil
	})
	// A marker published after them bounds the wait for duplicates.
	if err := nc.Publish("ws.in."+wire.ActionOffline, mustEnvelope(t)); err != nil {
		t.Fatal(err)
	}
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if marker.Load() < 1 {
			return errNotYet
		}
		return nil
	})
	if ends.Load() != 1 || offline.Load() != 1 || online.Load() != 1 {
		t.Fatalf("%d Client/disconnection, %d Client/offline, %d Client/online; want 1 each", ends.Load(), offline.Load(), online.Load())
	}
}

func mustEnvelope(t *testing.T) []byte {
	t.Helper()
	env := wire.Envelope{Action: wire.ActionOffline, Details: json.RawMessage(`{"user":"m"}`), User: "m", Groups: []string{},
		Connection: "e1.m", Edge: "e1", TS: time.Now().UTC()}
	return wire.AppendEnvelope(nil, &env)
}

// TestResync_ReapsAnEdgeWhoseExpiryWasMissed: the index holds a live lease
// for an edge whose key is gone from the bucket (a replica that missed the
// expiry marker); resync finds out and the connection's reap is due, with
// one Client/disconnection 1006. Fails when resync skips a missing key.
func TestResync_ReapsAnEdgeWhoseExpiryWasMissed(t *testing.T) {
	nc, kv := bucket(t)
	ctx := context.Background()
	var ends atomic.Int32
	if _, err := nc.Subscribe("ws.in."+wire.ActionDisconnection, func(m *nats.Msg) {
		natstest.Check(t, schemacheck.Envelope, m.Data)
		ends.Add(1)
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	rec := wire.PresenceConn{User: "bob", Groups: []string{}, Connection: "e1.c1", Edge: "e1", Epoch: "x", Since: time.Now().UTC()}
	put(t, kv, wire.PresenceConnKey("e1", "c1"), rec)
	// A replica without its goroutines: the index is fed by hand, as if
	// the lease's put had been seen and its expiry missed.
	s := &Service{cfg: Config{Grace: time.Hour, Logger: slog.New(slog.DiscardHandler)}, subj: wire.NewSubjects("ws"), nc: nc, kv: kv, x: newIndex()}
	s.cfg.Meter = noop.NewMeterProvider().Meter("")
	s.metrics()
	s.x.edges["e1"] = &edge{epoch: "x"}
	e, err := kv.Get(ctx, wire.PresenceConnKey("e1", "c1"))
	if err != nil {
		t.Fatal(err)
	}
	s.x.apply(e, time.Now())
	s.x.markLoaded()
	if tasks := s.due(time.Now(), true); len(tasks) != 0 {
		t.Fatalf("%d tasks due before the resync", len(tasks))
	}
	s.resync(ctx)
	tasks := s.due(time.Now(), true)
	if len(tasks) != 1 {
		t.Fatalf("%d tasks due after the resync, want the reap", len(tasks))
	}
	tasks[0](ctx)
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if ends.Load() != 1 {
			return errNotYet
		}
		return nil
	})
}

// TestEmptyBucket_LoadsAndAnswers: a replica started before any edge (an
// empty bucket) finishes loading and answers. Fails when the index waits
// for entries to mark itself loaded.
func TestEmptyBucket_LoadsAndAnswers(t *testing.T) {
	ns := natstest.RunJetStream(t)
	nc := natstest.Connect(t, ns)
	startService(t, nc, Config{Mode: presencekv.Memory, Bucket: "empty", Grace: time.Second})
	natstest.CheckFor(t, natstest.Wait, 20*time.Millisecond, func() error {
		m, err := nc.Request("ws.presence.user.ann", nil, natstest.Wait)
		if err != nil {
			return err
		}
		var a wire.PresenceUserAnswer
		if err := json.Unmarshal(m.Data, &a); err != nil || a.User != "ann" || a.Online {
			return fmt.Errorf("answer %s", m.Data)
		}
		return nil
	})
}

// TestOnline_FiredForAPendingKeyEvenWhenItsEdgeDied: an edge recorded a
// connection and created its user's key pending, then died before anything
// else; two replicas fire exactly one Client/online, with the connection's
// envelope, and once the dead edge's lease is gone, one
// Client/disconnection 1006 and then one Client/offline. Fails when the
// online transition is left to the edge, the claim is not a compare-and-set,
// or the offline does not wait for the online.
func TestOnline_FiredForAPendingKeyEvenWhenItsEdgeDied(t *testing.T) {
	nc, kv := bucket(t)
	ctx := context.Background()
	events := make(chan wire.Envelope, 16)
	if _, err := nc.Subscribe("ws.in.*", func(m *nats.Msg) {
		natstest.Check(t, schemacheck.Envelope, m.Data)
		env, err := wire.DecodeEnvelope(m.Data)
		if err != nil {
			t.Error(err)
			return
		}
		events <- env
	}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	now := time.Now().UTC()
	put(t, kv, wire.PresenceEdgeKey("e1"), wire.PresenceLease{Epoch: "x", Since: now})
	put(t, kv, wire.PresenceConnKey("e1", "c1"), wire.PresenceConn{User: "ann", Session: "s1", Groups: []string{"room"}, Language: "fr",
		Connection: "e1.c1", Edge: "e1", Epoch: "x", Since: now})
	put(t, kv, wire.PresenceUserKey("ann"), wire.PresenceUserState{User: "ann", Connection: "e1.c1", Since: now, Pending: true})
	startService(t, nc, Config{Mode: presencekv.Memory, Grace: 200 * time.Millisecond})
	startService(t, nc, Config{Mode: presencekv.Memory, Grace: 200 * time.Millisecond})

	next := func() wire.Envelope {
		t.Helper()
		select {
		case env := <-events:
			return env
		case <-time.After(natstest.Wait):
			t.Fatal("no event")
		}
		return wire.Envelope{}
	}
	on := next()
	if on.Action != wire.ActionOnline || string(on.Details) != `{"user":"ann"}` || on.Connection != "e1.c1" || on.Session != "s1" ||
		on.Edge != "e1" || on.Language != "fr" || len(on.Groups) != 1 || on.Groups[0] != "room" {
		t.Fatalf("first event %+v", on)
	}
	// The edge is dead: its lease goes (as its expiry would end it).
	if err := kv.Purge(ctx, wire.PresenceEdgeKey("e1")); err != nil {
		t.Fatal(err)
	}
	if env := next(); env.Action != wire.ActionDisconnection || string(env.Details) != `{"code":1006}` {
		t.Fatalf("second event %+v", env)
	}
	if env := next(); env.Action != wire.ActionOffline || env.User != "ann" {
		t.Fatalf("third event %+v", env)
	}
	// A marker published after them bounds the wait for duplicates.
	if err := nc.Publish("ws.in."+wire.ActionOffline, mustEnvelope(t)); err != nil {
		t.Fatal(err)
	}
	if env := next(); env.User != "m" {
		t.Fatalf("a fourth event before the marker: %+v", env)
	}
}

// TestEvents_AFailedPublishIsTriedAgain: a transition is claimed in the
// bucket before its event is published, so no replica fires it again; an
// event the inbound stream could not store (here: not there yet) is
// published again until it is, and stored once. Fails when emit gives up
// after one try (the Client/online is never stored).
func TestEvents_AFailedPublishIsTriedAgain(t *testing.T) {
	nc, kv := bucket(t)
	ctx := context.Background()
	now := time.Now().UTC()
	put(t, kv, wire.PresenceEdgeKey("e1"), wire.PresenceLease{Epoch: "x", Since: now})
	put(t, kv, wire.PresenceConnKey("e1", "c1"), wire.PresenceConn{User: "ann", Connection: "e1.c1", Edge: "e1", Epoch: "x", Since: now})
	put(t, kv, wire.PresenceUserKey("ann"), wire.PresenceUserState{User: "ann", Connection: "e1.c1", Since: now, Pending: true})
	startService(t, nc, Config{Mode: presencekv.Memory, Grace: 200 * time.Millisecond, Inbound: true})
	// The claim is made and its first publish fails: no inbound stream.
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		e, err := kv.Get(ctx, wire.PresenceUserKey("ann"))
		if err != nil {
			return err
		}
		var st wire.PresenceUserState
		if err := json.Unmarshal(e.Value(), &st); err != nil || st.Pending {
			return fmt.Errorf("ann still pending (%v)", err)
		}
		return nil
	})
	// Longer than nats.go's own retries of a publish nobody answers.
	time.Sleep(1500 * time.Millisecond)
	st := natstest.InboundStream(t, nc, "WS_INBOUND", "ws")
	natstest.CheckFor(t, natstest.Wait, 20*time.Millisecond, func() error {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter("ws.inq.Client/online"))
		if err != nil {
			return err
		}
		if n := info.State.Msgs; n != 1 {
			return fmt.Errorf("%d Client/online stored, want 1", n)
		}
		return nil
	})
}
