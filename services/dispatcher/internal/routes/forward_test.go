package routes_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/internal/routes"
)

const secret = "route-secret-0123456789"

// hit is one request a test backend received.
type hit struct {
	header http.Header
	body   []byte
	env    wire.Envelope
}

// backend is a real HTTP server standing for the application. It checks
// every request as an application should (signature first) and records it;
// answer writes the response.
type backend struct {
	t   *testing.T
	url string

	mu   sync.Mutex
	hits []hit
}

func newBackend(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, n int)) *backend {
	t.Helper()
	b := &backend{t: t}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(r.Header.Get(routes.HeaderSignature)), []byte(want)) {
			t.Errorf("signature %q, want %q", r.Header.Get(routes.HeaderSignature), want)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var env wire.Envelope
		if err := json.Unmarshal(body, &env); err != nil {
			t.Errorf("body is not an envelope: %v\n%s", err, body)
		}
		b.mu.Lock()
		b.hits = append(b.hits, hit{header: r.Header.Clone(), body: body, env: env})
		n := len(b.hits)
		b.mu.Unlock()
		answer(w, r, n)
	}))
	t.Cleanup(ts.Close)
	b.url = ts.URL
	return b
}

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.hits)
}

func (b *backend) hit(i int) hit {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits[i]
}

// answerJSON answers status with body.
func answerJSON(status int, body string) func(http.ResponseWriter, *http.Request, int) {
	return func(w http.ResponseWriter, _ *http.Request, _ int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// harness is a dispatcher running the routes of a routes file on a real
// NATS, with a capture of what reaches clients.
type harness struct {
	edge, dnc *nats.Conn
	capture   *natstest.Capture
	handled   chan string // action of each handled message
}

// start runs routesJSON (a routes file in JSON) with a Go handler for
// "shop/special", which must not reach any backend.
func start(t *testing.T, routesJSON string) *harness {
	t.Helper()
	table, err := routes.Parse([]byte(routesJSON))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	srv := natstest.RunServer(t)
	h := &harness{edge: natstest.Connect(t, srv), dnc: natstest.Connect(t, srv), handled: make(chan string, 64)}
	h.capture = natstest.Subscribe(t, h.edge, "")
	fwd, err := routes.NewForwarder(table, routes.Options{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dispatcher.New(h.dnc, dispatcher.WithHooks(dispatcher.Hooks{
		Handled: func(action string, _ dispatcher.Outcome, _ time.Duration) { h.handled <- action },
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := fwd.Register(d); err != nil {
		t.Fatalf("Register: %v", err)
	}
	if err := d.Handle("shop/special", func(_ context.Context, m *dispatcher.Message) error {
		return m.Reply("special", nil)
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), natstest.Wait)
		defer cancel()
		if err := d.Drain(ctx); err != nil {
			t.Errorf("Drain: %v", err)
		}
		fwd.Close()
	})
	return h
}

// send publishes env as an edge does and returns it.
func (h *harness) send(t *testing.T, env wire.Envelope) wire.Envelope {
	t.Helper()
	natstest.Publish(t, h.edge, "", env)
	return env
}

// done waits until the dispatcher has handled the next message.
func (h *harness) done(t *testing.T) {
	t.Helper()
	select {
	case <-h.handled:
	case <-time.After(natstest.Wait):
		t.Fatal("no message handled")
	}
}

// quiet proves, once a message was handled, that the dispatcher published
// nothing more: its own connection publishes the marker.
func (h *harness) quiet(t *testing.T) {
	t.Helper()
	h.capture.Quiet(t, h.dnc)
}

func route(action, url, extra string) string {
	return fmt.Sprintf(`{"routes": [{"action": %q, "url": %q%s}]}`, action, url, extra)
}

func TestRouteForwardsTheSignedEnvelopeAndRelaysTheReply(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request, _ int) {
		var env wire.Envelope
		body, _ := json.Marshal(map[string]any{"action": "hello", "details": "Hello back"})
		_ = json.NewDecoder(r.Body).Decode(&env)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	h := start(t, route("hello", b.url+"/ws/hello", ""))

	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	hdr := nats.Header{}
	hdr.Set(wire.HeaderTraceparent, tp)
	hdr.Set(wire.HeaderTracestate, "vendor=1")
	hdr.Set(wire.HeaderMsgID, "e1-c1-7")
	env := natstest.Envelope("hello", "Hello, world!")
	before := time.Now().Unix()
	natstest.PublishWithHeader(t, h.edge, "", env, hdr)

	r := h.capture.Next(t)
	if r.Subject != "ws.send.conn."+natstest.Connection {
		t.Fatalf("reply on %s, want ws.send.conn.%s", r.Subject, natstest.Connection)
	}
	if r.Outbound.Action != "hello" || string(r.Outbound.Details) != `"Hello back"` || string(r.Outbound.Ref) != string(env.Ref) {
		t.Fatalf("reply %s, want hello \"Hello back\" with ref %s", r.Data, env.Ref)
	}

	got := b.hit(0)
	natstest.Check(t, schemacheck.Envelope, got.body)
	if got.env.Action != "hello" || string(got.env.Details) != `"Hello, world!"` || got.env.User != "u1" ||
		got.env.Connection != natstest.Connection || string(got.env.Ref) != string(env.Ref) {
		t.Fatalf("backend got envelope %s", got.body)
	}
	for name, want := range map[string]string{
		"Content-Type":         "application/json",
		"Traceparent":          tp,
		"Tracestate":           "vendor=1",
		routes.HeaderMsgID:     "e1-c1-7",
		routes.HeaderSignature: routes.Sign([]byte(secret), got.body),
	} {
		if v := got.header.Get(name); v != want {
			t.Errorf("header %s = %q, want %q", name, v, want)
		}
	}
	ts, err := strconv.ParseInt(got.header.Get(routes.HeaderTimestamp), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("%s = %q, want the Unix time of the request", routes.HeaderTimestamp, got.header.Get(routes.HeaderTimestamp))
	}
	h.done(t)
	h.quiet(t)
}

func TestRouteResponseSendsReachTheirTargets(t *testing.T) {
	b := newBackend(t, answerJSON(http.StatusOK, `{
		"action": "order/placed", "details": {"id": 7},
		"sends": [
			{"target": "user", "id": "u2", "action": "order/new", "details": {"id": 7}},
			{"target": "group", "id": "staff", "action": "order/new"},
			{"target": "filter", "filter": {"property": "language", "value": "de"}, "action": "news", "details": "neu"}
		]}`))
	h := start(t, `{"routes": [{"prefix": "order/", "url": "`+b.url+`"}]}`)
	env := h.send(t, natstest.Envelope("order/place", map[string]int{"item": 3}))
	want := []struct{ subject, action, details, ref string }{
		{"ws.send.conn." + natstest.Connection, "order/placed", `{"id":7}`, string(env.Ref)},
		{"ws.send.user.u2", "order/new", `{"id":7}`, ""},
		{"ws.send.group.staff", "order/new", "", ""},
		{"ws.send.filter", "news", `"neu"`, ""},
	}
	for _, w := range want {
		r := h.capture.Next(t)
		if r.Subject != w.subject || r.Outbound.Action != w.action || string(r.Outbound.Details) != w.details || string(r.Outbound.Ref) != w.ref {
			t.Fatalf("got %s on %s, want %+v", r.Data, r.Subject, w)
		}
	}
	h.done(t)
	h.quiet(t)
}

func TestRouteEmptyAnswersSendNothing(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer func(http.ResponseWriter, *http.Request, int)
	}{
		{"204", func(w http.ResponseWriter, _ *http.Request, _ int) { w.WriteHeader(http.StatusNoContent) }},
		{"200 empty", answerJSON(http.StatusOK, "")},
		{"200 {}", answerJSON(http.StatusOK, "{}")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t, tt.answer)
			h := start(t, route("hello", b.url, ""))
			h.send(t, natstest.Envelope("hello", "x"))
			h.done(t)
			h.quiet(t)
			if n := b.count(); n != 1 {
				t.Fatalf("backend hit %d times", n)
			}
		})
	}
}

// unreachableURL is an http URL where nothing listens any more.
func unreachableURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

func TestRouteFailuresBecomeErrorReplies(t *testing.T) {
	long := strings.Repeat("é", 300)
	tests := []struct {
		name        string
		answer      func(http.ResponseWriter, *http.Request, int)
		extra       string // route fields
		unreachable bool
		want        wire.Error
	}{
		{name: "timeout", extra: `, "timeout": "100ms"`,
			answer: func(_ http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() },
			want:   wire.Error{Code: 504, Message: "Gateway Timeout"}},
		{name: "500 keeps its text to itself", answer: answerJSON(500, `{"error":"db password=hunter2 rejected"}`),
			want: wire.Error{Code: 500, Message: "Internal Server Error"}},
		{name: "503", answer: answerJSON(503, `busy`), want: wire.Error{Code: 503, Message: "Service Unavailable"}},
		{name: "404", answer: answerJSON(404, `<html>not here</html>`), want: wire.Error{Code: 404, Message: "Not Found"}},
		{name: "400 with the backend's reason", answer: answerJSON(400, `{"error":"No hello message:("}`),
			want: wire.Error{Code: 400, Message: "No hello message:("}},
		{name: "422 with a long reason", answer: answerJSON(422, `{"error":"`+long+"\\n"+`"}`),
			want: wire.Error{Code: 422, Message: strings.Repeat("é", 199) + "…"}},
		{name: "403 with an empty reason", answer: answerJSON(403, `{"error":" "}`), want: wire.Error{Code: 403, Message: "Forbidden"}},
		{name: "redirect", answer: func(w http.ResponseWriter, r *http.Request, _ int) {
			http.Redirect(w, r, "http://elsewhere.invalid/", http.StatusFound)
		}, want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "not JSON", answer: answerJSON(200, `hello`), want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "unknown field", answer: answerJSON(200, `{"action":"hello","detail":1}`), want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "details without action", answer: answerJSON(200, `{"details":1}`), want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "bad reply action", answer: answerJSON(200, `{"action":"a.b"}`), want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "error reply without [code, message]", answer: answerJSON(200, `{"action":"hello:error","details":"no"}`), want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "one bad send sends nothing", answer: answerJSON(200, `{"action":"hello","sends":[{"target":"all","action":"ok"},{"target":"user","id":"a.b","action":"x"}]}`),
			want: wire.Error{Code: 502, Message: "Bad Gateway"}},
		{name: "unreachable", unreachable: true, want: wire.Error{Code: 502, Message: "Bad Gateway"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := unreachableURL(t)
			if !tt.unreachable {
				url = newBackend(t, tt.answer).url
			}
			h := start(t, route("hello", url, tt.extra))
			env := h.send(t, natstest.Envelope("hello", "Hello"))
			r := h.capture.Next(t)
			if r.Subject != "ws.send.conn."+natstest.Connection || r.Outbound.Action != "hello:error" || string(r.Outbound.Ref) != string(env.Ref) {
				t.Fatalf("got %s on %s, want hello:error with ref %s", r.Data, r.Subject, env.Ref)
			}
			if e := natstest.ErrorDetails(t, r); e != tt.want {
				t.Fatalf("details %+v, want %+v", e, tt.want)
			}
			h.done(t)
			h.quiet(t)
		})
	}
}

func TestRetriesOnlyForIdempotentRoutes(t *testing.T) {
	tests := []struct {
		name     string
		extra    string
		answer   func(w http.ResponseWriter, r *http.Request, n int)
		wantHits int
		want     string // reply action
	}{
		{"idempotent retries 5xx", `, "retries": 2, "idempotent": true`, answerJSON(503, ""), 3, "hello:error"},
		{"not idempotent never retries", ``, answerJSON(503, ""), 1, "hello:error"},
		{"idempotent without retries", `, "idempotent": true`, answerJSON(500, ""), 1, "hello:error"},
		{"4xx is never retried", `, "retries": 2, "idempotent": true`, answerJSON(409, ""), 1, "hello:error"},
		{"timeouts are retried", `, "retries": 1, "idempotent": true, "timeout": "50ms"`,
			func(_ http.ResponseWriter, r *http.Request, _ int) { <-r.Context().Done() }, 2, "hello:error"},
		{"success after a retry", `, "retries": 3, "idempotent": true`, func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 1 {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			answerJSON(200, `{"action":"hello","details":"second time"}`)(w, r, n)
		}, 2, "hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t, tt.answer)
			h := start(t, route("hello", b.url, tt.extra))
			hdr := nats.Header{}
			hdr.Set(wire.HeaderMsgID, "msg-1")
			natstest.PublishWithHeader(t, h.edge, "", natstest.Envelope("hello", "x"), hdr)
			if r := h.capture.Next(t); r.Outbound.Action != tt.want {
				t.Fatalf("reply %s, want action %s", r.Data, tt.want)
			}
			h.done(t)
			h.quiet(t)
			if n := b.count(); n != tt.wantHits {
				t.Fatalf("backend hit %d times, want %d", n, tt.wantHits)
			}
			// Every try carries the same envelope, signature and message id.
			first := b.hit(0)
			for i := 1; i < tt.wantHits; i++ {
				if hi := b.hit(i); string(hi.body) != string(first.body) || hi.header.Get(routes.HeaderMsgID) != "msg-1" {
					t.Fatalf("try %d differs: %s %v", i+1, hi.body, hi.header)
				}
			}
		})
	}
}

func TestPrefixRouteLeavesExactHandlersAlone(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.WriteHeader(http.StatusNoContent)
	})
	h := start(t, `{"routes": [{"prefix": "shop/", "url": "`+b.url+`"}]}`)
	h.send(t, natstest.Envelope("shop/special", nil))
	if r := h.capture.Next(t); r.Outbound.Action != "special" {
		t.Fatalf("got %s, want the Go handler's reply", r.Data)
	}
	h.done(t)
	for _, action := range []string{"shop/cart/add", "shop/pay"} {
		h.send(t, natstest.Envelope(action, nil))
		h.done(t)
	}
	h.send(t, natstest.Envelope("other", nil)) // no route, no handler: dropped
	h.quiet(t)
	if n := b.count(); n != 2 {
		t.Fatalf("backend hit %d times, want 2", n)
	}
	if a0, a1 := b.hit(0).env.Action, b.hit(1).env.Action; a0+" "+a1 != "shop/cart/add shop/pay" && a1+" "+a0 != "shop/cart/add shop/pay" {
		t.Fatalf("backend got %s and %s", a0, a1)
	}
}
