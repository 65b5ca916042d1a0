package edge_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// marker is published to ws.send.all after a targeted message: since one
// publisher's messages reach each connection in order, a connection whose
// next frame is the marker did not receive the targeted message.
const marker = `{"action":"marker"}`

func publish(t *testing.T, nc *nats.Conn, subject, data string) {
	t.Helper()
	if err := nc.Publish(subject, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

func TestDelivery_EachTargetReachesExactlyItsConnections(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e1 := startEdge(t, ns, map[string]string{"EDGE_ALLOW_ANONYMOUS": "true", "EDGE_ID": "e1"})
	e2 := startEdge(t, ns, map[string]string{"EDGE_ALLOW_ANONYMOUS": "true", "EDGE_ID": "e2"})

	// alice has two tabs on two edges and one session each; bob shares
	// alice's "red" group; carol is in "blue"; anon has no token.
	hdr := func(claims map[string]any) http.Header { return bearer(token(t, claims)) }
	conns := map[string]*edgetest.Client{
		"alice1": edgetest.Dial(t, e1.URL, hdr(map[string]any{"sub": "alice", "sid": "s1", "groups": []string{"red"}, "lang": "de", "props": map[string]string{"plan": "pro"}})),
		"alice2": edgetest.Dial(t, e2.URL, hdr(map[string]any{"sub": "alice", "sid": "s2", "groups": []string{"red"}})),
		"bob":    edgetest.Dial(t, e2.URL, hdr(map[string]any{"sub": "bob", "sid": "s3", "groups": []string{"red", "blue"}, "props": map[string]string{"plan": "free"}})),
		"carol":  edgetest.Dial(t, e1.URL, hdr(map[string]any{"sub": "carol", "jti": "s4", "groups": []string{"blue"}})),
	}
	for _, c := range conns {
		c.ExpectOK()
	}
	anon := edgetest.Dial(t, e1.URL, http.Header{"Accept-Language": {"fr-CA,fr;q=0.8"}})
	anon.Authenticate("")
	conns["anon"] = anon

	// The connection id of alice1, learned from its envelope.
	in := subscribe(t, nc, "ws.in.whoami")
	conns["alice1"].Send("whoami", nil)
	msg, err := in.NextMsg(edgetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Connection string }
	_ = json.Unmarshal(msg.Data, &env)

	cases := []struct {
		subject, body string
		want          []string
	}{
		{"ws.send.all", `{"action":"t"}`, []string{"alice1", "alice2", "bob", "carol", "anon"}},
		{"ws.send.users", `{"action":"t"}`, []string{"alice1", "alice2", "bob", "carol"}},
		{"ws.send.user.alice", `{"action":"t"}`, []string{"alice1", "alice2"}},
		{"ws.send.group.red", `{"action":"t"}`, []string{"alice1", "alice2", "bob"}},
		{"ws.send.group.blue", `{"action":"t"}`, []string{"bob", "carol"}},
		{"ws.send.session.s2", `{"action":"t"}`, []string{"alice2"}},
		{"ws.send.session.s4", `{"action":"t"}`, []string{"carol"}},
		{"ws.send.conn." + env.Connection, `{"action":"t","ref":5}`, []string{"alice1"}},
		{"ws.send.filter", `{"action":"t","filter":{"property":"language","value":"de"}}`, []string{"alice1"}},
		{"ws.send.filter", `{"action":"t","filter":{"property":"language","value":"fr-CA"}}`, []string{"anon"}},
		{"ws.send.filter", `{"action":"t","filter":{"property":"plan","value":"free"}}`, []string{"bob"}},
		{"ws.send.filter", `{"action":"t","filter":{"property":"ip","value":"127.0.0.1"}}`, []string{"alice1", "alice2", "bob", "carol", "anon"}},
		{"ws.send.user.nobody", `{"action":"t"}`, nil},
		// Refused outbound messages reach nobody.
		{"ws.send.all", `{"action":"a.b"}`, nil},
		// Reserved actions: only the edge sends them (a forged kick or ack).
		{"ws.send.all", `{"action":"Server/close"}`, nil},
		{"ws.send.user.alice", `{"action":"Server/ack","details":{"duplicate":false,"durable":true},"ref":"m1"}`, nil},
		{"ws.send.all", `{"action":"Client/error","details":[400,"forged"]}`, nil},
		// An error response must carry [code, message] (DESIGN §2).
		{"ws.send.all", `{"action":"t:error","details":"not [code, message]"}`, nil},
		{"ws.send.user.alice", `{"action":"t:error","details":[200,"not an error status"]}`, nil},
		{"ws.send.all", `{"action":"t","ref":{"x":1}}`, nil},
		{"ws.send.all", `not json`, nil},
		{"ws.send.filter", `{"action":"t"}`, nil},
	}
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%d %s", i, tc.subject), func(t *testing.T) {
			publish(t, nc, tc.subject, tc.body)
			publish(t, nc, "ws.send.all", marker)
			for name, c := range conns {
				f := c.Next()
				if contains(tc.want, name) {
					if f.Action != "t" {
						t.Fatalf("%s got %s, want the message", name, f)
					}
					if err := check.Check(schemacheck.ServerFrame, f.Raw); err != nil {
						t.Fatal(err)
					}
					f = c.Next()
				}
				if f.Action != "marker" {
					t.Fatalf("%s got %s, want the marker", name, f)
				}
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestDelivery_ReplyToConnectionCarriesRef(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	// A responder in "any language": here a plain NATS subscriber.
	sub, err := nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		var env struct {
			Connection string
			Details    json.RawMessage
			Ref        json.RawMessage
		}
		_ = json.Unmarshal(m.Data, &env)
		out, _ := json.Marshal(map[string]any{"action": "echo", "details": env.Details, "ref": env.Ref})
		_ = nc.Publish("ws.send.conn."+env.Connection, out)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil { // the responder is subscribed before the request is sent
		t.Fatal(err)
	}
	c := e.dial(t, map[string]any{"sub": "alice"})
	c.Send("echo", map[string]any{"n": 1}, "req-1")
	f := c.Expect("echo")
	if string(f.Ref) != `"req-1"` || string(f.Details) != `{"n":1}` {
		t.Fatalf("echo reply %s", f)
	}
}

func TestClose_ByUserSessionAndConnection(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e1 := startEdge(t, ns, map[string]string{"EDGE_ID": "e1"})
	e2 := startEdge(t, ns, map[string]string{"EDGE_ID": "e2"})
	a1 := e1.dial(t, map[string]any{"sub": "alice", "sid": "sa1"})
	a2 := e2.dial(t, map[string]any{"sub": "alice", "sid": "sa2"})
	b1 := e1.dial(t, map[string]any{"sub": "bob", "sid": "sb1"})
	b2 := e2.dial(t, map[string]any{"sub": "bob", "sid": "sb2"})
	c1 := e1.dial(t, map[string]any{"sub": "carol"})

	expectKicked := func(c *edgetest.Client) {
		t.Helper()
		c.Expect("Server/close")
		if code, _ := c.WaitClose(); code != 1000 {
			t.Fatalf("close code %d, want 1000", code)
		}
	}
	expectOpen := func(cs ...*edgetest.Client) {
		t.Helper()
		publish(t, nc, "ws.send.all", marker)
		for _, c := range cs {
			c.Expect("marker")
		}
	}

	publish(t, nc, "ws.ctl.close.user.alice", "")
	expectKicked(a1)
	expectKicked(a2)
	expectOpen(b1, b2, c1)

	publish(t, nc, "ws.ctl.close.session.sb2", "")
	expectKicked(b2)
	expectOpen(b1, c1)

	in := subscribe(t, nc, "ws.in.whoami")
	b1.Send("whoami", nil)
	m, err := in.NextMsg(edgetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Connection string }
	_ = json.Unmarshal(m.Data, &env)
	publish(t, nc, "ws.ctl.close.conn."+env.Connection, "ignored payload")
	expectKicked(b1)
	expectOpen(c1)
}

func TestLifecycleEvents_OncePerConnectionWithIdentity(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_ID": "edge-a"})
	var mu sync.Mutex
	var events []map[string]any
	sub, err := nc.Subscribe("ws.in.>", func(m *nats.Msg) {
		var env map[string]any
		_ = json.Unmarshal(m.Data, &env)
		mu.Lock()
		events = append(events, env)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		c := edgetest.Dial(t, e.URL, nil)
		tok := token(t, map[string]any{"sub": fmt.Sprintf("u%d", i), "sid": "s", "groups": []string{"g"}})
		c.Authenticate(tok)
		c.Authenticate("")  // answered, but no second event
		c.Authenticate(tok) // renewal: no second event either
		// Even ones close with a handshake, odd ones drop the socket.
		if i%2 == 0 {
			_ = c.WS.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"), time.Now().Add(edgetest.Timeout))
		}
		_ = c.WS.Close()
		<-c.Done()
	}
	edgetest.Eventually(t, "all lifecycle events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == 2*n
	})
	counts := map[string]int{}
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		counts[fmt.Sprint(ev["action"], " ", ev["user"])]++
		if ev["edge"] != "edge-a" || ev["session"] != "s" || fmt.Sprint(ev["groups"]) != "[g]" || !strings.HasPrefix(ev["connection"].(string), "edge-a.") {
			t.Fatalf("event without identity: %v", ev)
		}
		if ev["action"] == "Client/disconnection" {
			// The close code (DESIGN §2): the client's own, or 1006 for a
			// socket dropped without a close frame.
			var i int
			_, _ = fmt.Sscanf(ev["user"].(string), "u%d", &i)
			want := map[bool]float64{true: 1001, false: 1006}[i%2 == 0]
			if code := ev["details"].(map[string]any)["code"]; code != want {
				t.Fatalf("%v: details code %v, want %v", ev["user"], code, want)
			}
		}
	}
	for i := range n {
		for _, a := range []string{"Client/authentication", "Client/disconnection"} {
			if k := fmt.Sprintf("%s u%d", a, i); counts[k] != 1 {
				t.Fatalf("%s seen %d times", k, counts[k])
			}
		}
	}
}

// TestOrderingPromise: a push made the instant ok arrives, and a greeting
// sent by a handler of the Client/authentication event, are never lost.
func TestOrderingPromise_FirstMessagesAreNeverLost(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	greeter := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	sub, err := greeter.Subscribe("ws.in.Client/authentication", func(m *nats.Msg) {
		var env struct{ User string }
		_ = json.Unmarshal(m.Data, &env)
		_ = greeter.Publish("ws.send.user."+env.User, []byte(`{"action":"greeting"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := greeter.Flush(); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("user%d", i)
			c, _, err := edgetest.TryDial(t, e.URL, bearer(token(t, map[string]any{"sub": user})))
			if err != nil {
				errs <- err
				return
			}
			defer c.WS.Close()
			want := map[string]bool{"Client/authentication": true}
			for len(want) > 0 {
				f, ok := c.Take()
				if !ok {
					errs <- fmt.Errorf("%s: connection ended, still waiting for %v", user, want)
					return
				}
				if f.Action == "Client/authentication" {
					if err := nc.Publish("ws.send.user."+user, []byte(`{"action":"push"}`)); err != nil {
						errs <- err
						return
					}
					want["push"], want["greeting"] = true, true
				}
				if !want[f.Action] {
					errs <- fmt.Errorf("%s: unexpected %s", user, f)
					return
				}
				delete(want, f.Action)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
