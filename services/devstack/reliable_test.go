package devstack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// routesSecret signs the dispatcher's requests to the test backend.
const routesSecret = "reliable-routes-secret-0123"

// backend is an application behind an HTTP route (DISPATCHER_ROUTES_FILE)
// that follows the idempotency pattern of the SDK's Example_idempotent: it
// records each action's X-Wsgate-Msg-Id with its effect and applies an
// effect once per id, however often the action is delivered.
type backend struct {
	srv *httptest.Server

	mu       sync.Mutex
	requests map[string]int // msg id → requests
	effects  map[string]int // msg id → effects applied
	order    []string       // msg ids in the order first seen
	holding  chan struct{}  // closed when the first request is held (hold mode)
	hold     bool           // hold the first request until the dispatcher dies
	held     bool
}

func newBackend(t *testing.T, hold bool) *backend {
	t.Helper()
	b := &backend{requests: map[string]int{}, effects: map[string]int{}, holding: make(chan struct{}), hold: hold}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	id := r.Header.Get("X-Wsgate-Msg-Id")
	b.mu.Lock()
	b.requests[id]++
	if b.effects[id] == 0 { // the effect and its key, in one step
		b.effects[id]++
		b.order = append(b.order, id)
	}
	holdThis := b.hold && !b.held
	b.held = b.held || holdThis
	b.mu.Unlock()
	if holdThis {
		close(b.holding)
		<-r.Context().Done() // until the dispatcher that sent it dies
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"action":"order/placed","details":%q}`, id)
}

// counts returns copies of the request and effect counts.
func (b *backend) counts() (requests, effects map[string]int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	requests, effects = map[string]int{}, map[string]int{}
	for k, v := range b.requests {
		requests[k] = v
	}
	for k, v := range b.effects {
		effects[k] = v
	}
	return requests, effects
}

// routesFile writes a routes file sending action to b.
func (b *backend) routesFile(t *testing.T, action string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routes.json")
	data := fmt.Sprintf(`{"routes":[{"action":%q,"url":%q,"timeout":"30s"}]}`, action, b.srv.URL)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startReliableDispatcher runs a dispatcher process with reliable inbound
// on, routing to the backend, and waits until it is subscribed.
func startReliableDispatcher(t *testing.T, natsURL, routes string, env ...string) *proc {
	t.Helper()
	p := start(t, "dispatcher", append([]string{"NATS_URL=" + natsURL, "DISPATCHER_ADDR=127.0.0.1:0",
		"WS_INBOUND=memory", "DISPATCHER_RETRY_BACKOFF=100ms",
		"DISPATCHER_ROUTES_FILE=" + routes, "DISPATCHER_ROUTES_SECRET=" + routesSecret}, env...)...)
	p.waitLog(t, "dispatcher subscribed")
	return p
}

// waitStream waits until the edges have created the inbound stream.
func waitStream(t *testing.T, nc *nats.Conn) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var st jetstream.Stream
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err = js.Stream(ctx, "WS_INBOUND")
		cancel()
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("no inbound stream: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sendReliable sends ["order", n, null, id].
func sendReliable(c *edgetest.Client, id string, n int) error {
	return c.WS.WriteMessage(1, []byte(fmt.Sprintf(`["order",%d,null,%q]`, n, id)))
}

// ackOf decodes a Server/ack frame: its id and flags; ok false for any
// other frame.
func ackOf(f edgetest.Frame) (id string, ack wire.Ack, ok bool) {
	if f.Action != wire.ActionAck || json.Unmarshal(f.Ref, &id) != nil || json.Unmarshal(f.Details, &ack) != nil {
		return "", wire.Ack{}, false
	}
	return id, ack, true
}

// Mutations that fail it: a consumer without explicit acks or with a
// MaxDeliver of 1 (never redelivered: no second request), acking before
// the handler (no redelivery after the kill), or a backend without the
// msg-id check (effects 2).
func TestReliable_DispatcherKill9MidHandler_OtherReplicaHandlesOnce(t *testing.T) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	_, edgeAddr := startEdgeProc(t, ns.ClientURL(), "edge1", "WS_INBOUND=memory")
	waitStream(t, nc)
	b := newBackend(t, true)
	routes := b.routesFile(t, "order")
	d1 := startReliableDispatcher(t, ns.ClientURL(), routes, "DISPATCHER_ACK_WAIT=10s")

	c := edgetest.Dial(t, wsURL(edgeAddr), http.Header(bearer(token(t, "kim"))))
	c.ExpectOK()
	c.SendRaw([]byte(`["order",{"item":"book"},"r-1","o-1"]`))
	if id, ack, ok := ackOf(c.Next()); !ok || id != "o-1" || !ack.Durable || ack.Duplicate {
		t.Fatal("no durable ack for o-1")
	}
	select {
	case <-b.holding: // d1 is in the handler, and the effect is applied
	case <-time.After(30 * time.Second):
		t.Fatal("the backend got no request")
	}
	startReliableDispatcher(t, ns.ClientURL(), routes, "DISPATCHER_ACK_WAIT=10s")
	if err := d1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// d2 gets it after the ack wait; the backend answers it without a second effect.
	f := nextWithin(t, c, 60*time.Second)
	if f.Action != "order/placed" || string(f.Ref) != `"r-1"` {
		t.Fatalf("got %s, want the reply to r-1", f)
	}
	requests, effects := b.counts()
	if requests["kim.o-1"] != 2 || effects["kim.o-1"] != 1 || len(requests) != 1 {
		t.Fatalf("requests %v, effects %v; want 2 requests and 1 effect for kim.o-1", requests, effects)
	}
	t.Logf("redelivered to the other replica %s after the kill", time.Since(killed).Round(time.Millisecond))
}

// Mutations that fail it: a Nats-Msg-Id per connection instead of per user
// (the resends to edge2 are handled twice), or a dedupe window of 0.
func TestReliable_EdgeKill9BetweenSendAndAck_ResendHandledOnce(t *testing.T) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	edge1, addr1 := startEdgeProc(t, ns.ClientURL(), "edge1", "WS_INBOUND=memory")
	_, addr2 := startEdgeProc(t, ns.ClientURL(), "edge2", "WS_INBOUND=memory")
	st := waitStream(t, nc)
	b := newBackend(t, false)
	startReliableDispatcher(t, ns.ClientURL(), b.routesFile(t, "order"))

	const n = 40
	c := edgetest.Dial(t, wsURL(addr1), http.Header(bearer(token(t, "lee"))))
	c.ExpectOK()
	for i := range n {
		if err := sendReliable(c, fmt.Sprintf("e-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	// Killed right after the sends: whether each frame was stored, and
	// whether its ack got out, is up to the timing. The client cannot tell
	// either, so it resends every one it saw no ack for; this test resends
	// all of them, as if no ack had got out (the strictest case).
	if err := edge1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	ackedBefore := 0
	for {
		f, ok := c.Take()
		if !ok {
			break
		}
		if _, _, ok := ackOf(f); ok {
			ackedBefore++
		}
	}

	c2 := edgetest.Dial(t, wsURL(addr2), http.Header(bearer(token(t, "lee"))))
	// Replies to what edge1 stored go to the user: once c2's subscriptions
	// stand they may reach it before its ok (DESIGN §4 orders ok after the
	// subscriptions, not before every message).
	for f := c2.Next(); f.Action != "Client/authentication" || string(f.Details) != `"ok"`; f = c2.Next() {
		if f.Action != "order/placed" {
			t.Fatalf("got %s, want ok (or a reply to an earlier action)", f)
		}
	}
	for i := range n {
		if err := sendReliable(c2, fmt.Sprintf("e-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	acked, duplicates := map[string]bool{}, 0
	for len(acked) < n {
		f := c2.Next()
		if f.Action == "order/placed" {
			continue // replies reach the user's new connection too
		}
		id, ack, ok := ackOf(f)
		if !ok || !ack.Durable || acked[id] {
			t.Fatalf("bad ack on resend: %s", f)
		}
		acked[id] = true
		if ack.Duplicate {
			duplicates++
		}
	}
	t.Logf("acks out before the kill: %d of %d; on the resend to edge2, already stored (duplicate): %d", ackedBefore, n, duplicates)
	if duplicates < ackedBefore {
		t.Fatalf("%d acked before the kill but only %d duplicates on the resend", ackedBefore, duplicates)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("ws.inq.order"))
		requests, _ := b.counts()
		if err == nil && info.State.Subjects["ws.inq.order"] == 0 && len(requests) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of %d (stream: %v)", len(requests), n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	requests, _ := b.counts()
	for i := range n {
		if id := fmt.Sprintf("lee.e-%d", i); requests[id] != 1 {
			t.Errorf("%s handled %d times, want once", id, requests[id])
		}
	}
}

// nextWithin is Client.Next with a longer wait, for what comes after an
// ack wait.
func nextWithin(t *testing.T, c *edgetest.Client, wait time.Duration) edgetest.Frame {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if f, ok := c.Take(); ok {
			return f
		}
		select {
		case <-c.Done():
			t.Fatal("connection ended while waiting for a frame")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no frame within %s", wait)
		}
	}
}
