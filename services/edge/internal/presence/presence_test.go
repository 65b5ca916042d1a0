package presence

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/internal/presencekv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type fixture struct {
	nc  *nats.Conn
	hub *hub.Hub
	kv  jetstream.KeyValue
	w   *Writer
}

func start(t *testing.T, cfg Config) *fixture {
	t.Helper()
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	subjects := wire.NewSubjects("")
	cfg.EdgeID, cfg.Bucket, cfg.Mode = "e1", "presence_test", presencekv.Memory
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	w, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
		defer cancel()
		w.Close(ctx)
	})
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "presence_test")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{nc: nc, hub: hub.New(nc, hub.Config{EdgeID: "e1", Subjects: subjects, AuthTimeout: time.Minute}), kv: kv, w: w}
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// client returns an authenticated hub client of user.
func (f *fixture) client(t *testing.T, id, user string) *hub.Client {
	t.Helper()
	c := hub.NewClient(nil, "e1", id, "127.0.0.1", "", "")
	ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	if err := f.hub.Authenticate(ctx, c, &auth.Identity{User: user, Groups: []string{"g"}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) get(t *testing.T, key string) (jetstream.KeyValueEntry, bool) {
	t.Helper()
	e, err := f.kv.Get(context.Background(), key)
	if err != nil {
		return nil, false
	}
	return e, true
}

// TestWriter_RecordsBeforeAddReturnsAndLeavesOnlineToTheDispatchers: Add
// returns with the connection recorded under the lease's epoch and the user
// key created pending (the edge fires no Client/online: a dispatcher claims
// it); a touch by a second connection keeps the mark as it found it;
// removing the connections deletes their records and publishes each end.
// Fails when Add returns before the record is stored, touchUser clears or
// sets Pending on a key it did not create, or Remove skips ended for a
// record it deleted itself.
func TestWriter_RecordsBeforeAddReturnsAndLeavesOnlineToTheDispatchers(t *testing.T) {
	f := start(t, Config{Lease: 2 * time.Second})
	ctx := context.Background()
	a, b, c := f.client(t, "c1", "ann"), f.client(t, "c2", "ann"), f.client(t, "c3", "ann")
	f.w.Add(ctx, a)
	e, ok := f.get(t, "conn.e1.c1")
	if !ok {
		t.Fatal("Add returned before c1 was recorded")
	}
	var rec wire.PresenceConn
	if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Epoch != f.w.Epoch() || rec.User != "ann" || rec.Connection != "e1.c1" {
		t.Fatalf("record %s (%v), epoch %s", e.Value(), err, f.w.Epoch())
	}
	user := func() wire.PresenceUserState {
		t.Helper()
		e, ok := f.get(t, "user.ann")
		var st wire.PresenceUserState
		if !ok || json.Unmarshal(e.Value(), &st) != nil {
			t.Fatalf("user key: %v", e)
		}
		return st
	}
	if st := user(); !st.Pending || st.Connection != "e1.c1" {
		t.Fatalf("user key after the first connection: %+v", st)
	}
	f.w.Add(ctx, b)
	if st := user(); !st.Pending || st.Connection != "e1.c2" {
		t.Fatalf("user key after a touch of a pending key: %+v", st)
	}
	// A dispatcher claims the online transition.
	e, _ = f.get(t, "user.ann")
	claimed, _ := json.Marshal(wire.PresenceUserState{User: "ann", Connection: "e1.c2"})
	if _, err := f.kv.Update(ctx, "user.ann", claimed, e.Revision()); err != nil {
		t.Fatal(err)
	}
	f.w.Add(ctx, c)
	if st := user(); st.Pending || st.Connection != "e1.c3" {
		t.Fatalf("user key after a touch of a claimed key: %+v", st)
	}
	var ended atomic.Int32
	for _, cl := range []*hub.Client{a, b, c} {
		f.w.Remove(cl, func() { ended.Add(1) })
	}
	edgetest.Eventually(t, "three ends", func() bool { return ended.Load() == 3 })
	if _, ok := f.get(t, "conn.e1.c1"); ok {
		t.Fatal("c1's record is left")
	}
}

// TestWriter_LostLeaseStartsNewEpochAndSkipsReapedEnds: the lease key is
// purged as a dispatcher's reap leaves things after an expiry; the writer
// notices at its next renewal, takes a new epoch and calls OnLeaseLost; a
// connection whose record was reaped does not publish its end again.
// Fails when the renewal is not a compare-and-set (WithExpectLastSequence-
// PerSubject), or Remove ignores the revision mismatch.
func TestWriter_LostLeaseStartsNewEpochAndSkipsReapedEnds(t *testing.T) {
	var lost atomic.Int32
	f := start(t, Config{Lease: 1500 * time.Millisecond, OnLeaseLost: func() { lost.Add(1) }})
	ctx := context.Background()
	a := f.client(t, "c1", "ann")
	f.w.Add(ctx, a)
	first := f.w.Epoch()
	if err := f.kv.Purge(ctx, "edge.e1"); err != nil {
		t.Fatal(err)
	}
	if err := f.kv.Purge(ctx, "conn.e1.c1"); err != nil {
		t.Fatal(err)
	}
	edgetest.Eventually(t, "lease lost", func() bool { return lost.Load() == 1 })
	if f.w.Epoch() == first {
		t.Fatal("same epoch after the loss")
	}
	e, ok := f.get(t, "edge.e1")
	var l wire.PresenceLease
	if !ok || json.Unmarshal(e.Value(), &l) != nil || l.Epoch != f.w.Epoch() {
		t.Fatalf("lease after the loss: %v", e)
	}
	ended := make(chan struct{}, 1)
	f.w.Remove(a, func() { ended <- struct{}{} })
	b := f.client(t, "c2", "bob")
	f.w.Add(ctx, b)
	done := make(chan struct{})
	f.w.Remove(b, func() { close(done) })
	select {
	case <-done:
	case <-time.After(edgetest.Timeout):
		t.Fatal("b's end not published")
	}
	ctx, cancel := context.WithTimeout(ctx, edgetest.Timeout)
	defer cancel()
	f.w.Close(ctx) // every queued operation is done
	select {
	case <-ended:
		t.Fatal("a's end published after its record was reaped")
	default:
	}
}

// TestWriter_ARecordStoredByAFailedCreateIsStillRemoved: a create that
// timed out may have been stored all the same (here: the record is there
// before Add). Add then takes the stored record's revision, so that Remove
// deletes it: left behind, it would keep the user online for as long as
// the edge lives. Fails when Add gives up on a failed create.
func TestWriter_ARecordStoredByAFailedCreateIsStillRemoved(t *testing.T) {
	f := start(t, Config{Lease: 2 * time.Second})
	ctx := context.Background()
	c := f.client(t, "c9", "bea")
	stored, _ := json.Marshal(wire.PresenceConn{User: "bea", Connection: "e1.c9", Edge: "e1", Epoch: f.w.Epoch(), Groups: []string{"g"}})
	if _, err := f.kv.Create(ctx, "conn.e1.c9", stored); err != nil {
		t.Fatal(err)
	}
	f.w.Add(ctx, c)
	var ended atomic.Int32
	f.w.Remove(c, func() { ended.Add(1) })
	edgetest.Eventually(t, "the end", func() bool { return ended.Load() == 1 })
	if _, ok := f.get(t, "conn.e1.c9"); ok {
		t.Fatal("the record stored by the failed create is left")
	}
}
