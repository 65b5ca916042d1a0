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
	requests map[string]int    // msg id → requests
	effects  map[string]int    // msg id → effects applied
	order    []string          // msg ids in the order first seen
	edges    map[string]string // msg id → the envelope's edge, as first seen: which edge stored it
	holding  chan struct{}     // closed when the first request is held (hold mode)
	hold     bool              // hold the first request until the dispatcher dies
	held     bool
}

func newBackend(t *testing.T, hold bool) *backend {
	t.Helper()
	b := &backend{requests: map[string]int{}, effects: map[string]int{}, edges: map[string]string{},
		holding: make(chan struct{}), hold: hold}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var env struct {
		Edge string `json:"edge"`
	}
	_ = json.Unmarshal(body, &env) // the body is the inbound envelope
	id := r.Header.Get("X-Wsgate-Msg-Id")
	b.mu.Lock()
	b.requests[id]++
	if _, ok := b.edges[id]; !ok {
		b.edges[id] = env.Edge
	}
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

// storedBy returns a copy of which edge's envelope each msg id came in.
func (b *backend) storedBy() map[string]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	edges := make(map[string]string, len(b.edges))
	for k, v := range b.edges {
		edges[k] = v
	}
	return edges
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

// routesFile writes a routes file sending action to b. Its timeout, 9s, is
// shorter than every DISPATCHER_ACK_WAIT these tests use (10s and the
// default 30s), as the dispatcher requires.
func (b *backend) routesFile(t *testing.T, action string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routes.json")
	data := fmt.Sprintf(`{"routes":[{"action":%q,"url":%q,"timeout":"9s"}]}`, action, b.srv.URL)
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

// Edge1 is SIGKILLed right after its first Server/ack reached the client,
// so at least one frame was stored before the kill, and maybe all 40. The
// client resends all 40 to edge2. Which edge stored each action is read
// from the envelope the backend gets (its "edge"): the stream keeps one
// message per id, so an action edge1 stored must be acked duplicate:true on
// the resend and one it did not must be acked duplicate:false. This is read
// once everything is handled, not from the stream before the resend: the
// work queue deletes what the dispatcher has handled, and a count taken
// right after the kill could miss a store still in flight from edge1.
//
// Mutations that fail it: a Nats-Msg-Id per connection instead of per user
// (the resends to edge2 are stored and handled again, duplicate:false), a
// dedupe window of 0 (the same), or an edge that does not pass the
// stream's duplicate flag on (Ack{Duplicate: false} always: the action
// acked before the kill is acked duplicate:false on the resend).
func TestReliable_EdgeKill9BetweenSendAndAck_ResendHandledOnce(t *testing.T) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	edge1, addr1 := startEdgeProc(t, ns.ClientURL(), "edge1", "WS_INBOUND=memory")
	_, addr2 := startEdgeProc(t, ns.ClientURL(), "edge2", "WS_INBOUND=memory")
	st := waitStream(t, nc)
	b := newBackend(t, false)
	startReliableDispatcher(t, ns.ClientURL(), b.routesFile(t, "order"))

	// The first half goes to edge1; the second half is not sent before the
	// kill (it goes to edge2 only), so that both kinds of resend are there.
	const n, sentToEdge1 = 40, 20
	c := edgetest.Dial(t, wsURL(addr1), http.Header(bearer(token(t, "lee"))))
	c.ExpectOK()
	for i := range sentToEdge1 {
		if err := sendReliable(c, fmt.Sprintf("e-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	// Killed as soon as the first ack is out: that frame is stored, the
	// others may or may not be, and their acks may or may not get out. The
	// client cannot tell, so it resends every one it saw no ack for; this
	// test resends all of them, as if no ack had got out (the strictest case).
	ackedBefore := map[string]bool{}
	for len(ackedBefore) == 0 {
		f := c.Next()
		if f.Action == "order/placed" {
			continue // a reply to an action already handled
		}
		id, ack, ok := ackOf(f)
		if !ok || !ack.Durable {
			t.Fatalf("got %s, want a durable ack", f)
		}
		ackedBefore[id] = true
	}
	if err := edge1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for {
		f, ok := c.Take()
		if !ok {
			break
		}
		if id, _, ok := ackOf(f); ok {
			ackedBefore[id] = true
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
	duplicate := map[string]bool{} // id → its resend's ack said duplicate
	for len(duplicate) < n {
		f := c2.Next()
		if f.Action == "order/placed" {
			continue // replies reach the user's new connection too
		}
		id, ack, ok := ackOf(f)
		if _, seen := duplicate[id]; !ok || !ack.Durable || seen {
			t.Fatalf("bad ack on resend: %s", f)
		}
		duplicate[id] = ack.Duplicate
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
	storedBy := b.storedBy()
	stored1 := 0 // stored by edge1, before the kill
	for i := range n {
		ref, id := fmt.Sprintf("e-%d", i), fmt.Sprintf("lee.e-%d", i)
		if requests[id] != 1 {
			t.Errorf("%s handled %d times, want once", id, requests[id])
		}
		switch edge := storedBy[id]; {
		case edge == "edge1":
			stored1++
			if !duplicate[ref] {
				t.Errorf("%s: stored by edge1 before the kill, but its resend was acked duplicate:false", ref)
			}
		case edge == "edge2":
			if duplicate[ref] {
				t.Errorf("%s: stored only by edge2's resend, but acked duplicate:true", ref)
			}
			if ackedBefore[ref] {
				t.Errorf("%s: acked by edge1 before the kill, but stored only by edge2", ref)
			}
		default:
			t.Errorf("%s: handled envelope from edge %q", ref, edge)
		}
	}
	t.Logf("acks out before the kill: %d of %d sent to edge1; stored by edge1 before the kill: %d (acked duplicate:true on the resend), by edge2: %d",
		len(ackedBefore), sentToEdge1, stored1, n-stored1)
	if stored1 == 0 || stored1 > sentToEdge1 {
		t.Fatalf("edge1 stored %d of the %d frames sent to it, want 1 (it acked one) to %d", stored1, sentToEdge1, sentToEdge1)
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
