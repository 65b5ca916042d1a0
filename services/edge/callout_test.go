package edge_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// responder answers callout requests like an application would: the cookie
// "sid" names a session; it counts the requests it gets.
func responder(t *testing.T, nc *nats.Conn, subject string, sessions map[string]wire.CalloutResponse) *atomic.Int64 {
	t.Helper()
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		n.Add(1)
		if err := check.Check(schemacheck.CalloutRequest, m.Data); err != nil {
			t.Error(err)
		}
		var req wire.CalloutRequest
		_ = json.Unmarshal(m.Data, &req)
		resp, ok := sessions[req.Cookies["sid"]]
		if !ok {
			resp = wire.CalloutResponse{Error: &wire.CalloutError{Code: 401, Message: "unknown session"}}
		}
		data, _ := json.Marshal(resp)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &n
}

func cookie(sid string) http.Header {
	return http.Header{"Cookie": {"sid=" + sid + "; theme=dark"}, "Accept-Language": {"nl"}}
}

func TestCallout_CookieSessionsAndRefusals(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_JWT_SECRET": "", "EDGE_AUTH_CALLOUT_SUBJECT": "app.auth"})
	responder(t, nc, "app.auth", map[string]wire.CalloutResponse{
		"good":    {User: "alice", Session: "good", Groups: []string{"staff"}, Props: map[string]string{"plan": "pro"}, Expires: time.Now().Add(time.Hour).Unix()},
		"banned":  {Error: &wire.CalloutError{Code: 403, Message: "account suspended"}},
		"expired": {User: "bob", Expires: time.Now().Add(-time.Minute).Unix()},
		"broken":  {User: "a.b"},
		"down":    {Error: &wire.CalloutError{Code: 500, Message: "database down"}},
	})
	in := subscribe(t, nc, "ws.in.Client/authentication")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := edgetest.Dial(t, e.URL, cookie("good"))
	c.ExpectOK()
	m, err := in.NextMsg(edgetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	var env wire.Envelope
	_ = json.Unmarshal(m.Data, &env)
	if env.User != "alice" || env.Session != "good" || fmt.Sprint(env.Groups) != "[staff]" || env.Language != "nl" {
		t.Fatalf("identity from the callout: %+v", env)
	}
	publish(t, nc, "ws.send.filter", `{"action":"pro","filter":{"property":"plan","value":"pro"}}`)
	c.Expect("pro")

	for _, tc := range []struct {
		sid, reason string
		code, close int
	}{
		{"unknown", "unknown session", 401, 4401},
		{"banned", "account suspended", 403, 4403},
		{"expired", "session has expired", 401, 4401},
		{"broken", "identity service unavailable", 503, 1013},
		{"down", "identity service unavailable", 503, 1013},
	} {
		t.Run(tc.sid, func(t *testing.T) {
			c := edgetest.Dial(t, e.URL, cookie(tc.sid))
			code, msg := c.Expect("Client/authentication:error").Error()
			if code != tc.code || !strings.HasPrefix(msg, tc.reason) {
				t.Fatalf("got [%d %q], want [%d %q]", code, msg, tc.code, tc.reason)
			}
			if got, _ := c.WaitClose(); got != tc.close {
				t.Fatalf("close code %d, want %d", got, tc.close)
			}
		})
	}
}

func TestCallout_UnavailableCloses1013(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_JWT_SECRET": "", "EDGE_AUTH_CALLOUT_SUBJECT": "app.auth", "EDGE_AUTH_CALLOUT_TIMEOUT": "200ms"})
	// No responder at all.
	c := edgetest.Dial(t, e.URL, cookie("x"))
	if code, _ := c.Expect("Client/authentication:error").Error(); code != 503 {
		t.Fatalf("code %d", code)
	}
	if code, _ := c.WaitClose(); code != 1013 {
		t.Fatalf("close code %d, want 1013", code)
	}
	// A responder that never answers.
	sub, err := nc.Subscribe("app.auth", func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()
	c = edgetest.Dial(t, e.URL, cookie("y"))
	if code, _ := c.WaitClose(); code != 1013 {
		t.Fatalf("close code %d, want 1013", code)
	}
}

func TestCallout_ReconnectBurstIsCachedAndCollapsed(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	// One user reconnecting 1000 times, 50 at a time: the per-user cap is
	// not what this test is about (closes are not instant on the server).
	e := startEdge(t, ns, map[string]string{"EDGE_JWT_SECRET": "", "EDGE_AUTH_CALLOUT_SUBJECT": "app.auth",
		"EDGE_MAX_CONNECTIONS_PER_USER": "0"})
	asked := responder(t, nc, "app.auth", map[string]wire.CalloutResponse{"good": {User: "alice"}})
	const n, parallel = 1000, 50
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	var failed atomic.Int64
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, _, err := edgetest.TryDial(t, e.URL, cookie("good"))
			if err != nil {
				failed.Add(1)
				return
			}
			if f, ok := c.Take(); !ok || string(f.Details) != `"ok"` {
				failed.Add(1)
			}
			_ = c.WS.Close()
			<-c.Done()
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d reconnects failed", failed.Load(), n)
	}
	if got := asked.Load(); got > 2 {
		t.Fatalf("%d reconnects with one cookie asked the application %d times, want 1", n, got)
	}
	t.Logf("%d reconnects, %d callout requests", n, asked.Load())
}
