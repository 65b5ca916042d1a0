package edge_test

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

func TestSubscriptions_ReferenceCounted(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, nil)
	claims := map[string]any{"sub": "alice", "sid": "s1", "groups": []string{"red"}}
	subjects := []string{"ws.send.user.alice", "ws.send.group.red", "ws.send.session.s1"}
	for _, s := range subjects {
		waitSubs(t, ns, s, 0)
	}
	tab1 := e.dial(t, claims)
	tab2 := e.dial(t, claims)
	for _, s := range subjects {
		waitSubs(t, ns, s, 1) // one per edge, however many tabs
	}
	_ = tab1.WS.Close()
	<-tab1.Done()
	tab2.Send("Client/ping", nil)
	tab2.Expect("Server/pong")
	for _, s := range subjects {
		waitSubs(t, ns, s, 1)
	}
	_ = tab2.WS.Close()
	<-tab2.Done()
	for _, s := range subjects {
		waitSubs(t, ns, s, 0)
	}
}

func TestDeadPeer_DroppedWithinTwoPingIntervals(t *testing.T) {
	ns := edgetest.RunNATS(t)
	const interval = 300 * time.Millisecond
	e := startEdge(t, ns, map[string]string{"EDGE_PING_INTERVAL": interval.String()})
	alive := e.dial(t, map[string]any{"sub": "alive"})
	// The dead peer reads (so it learns when it is dropped) but never
	// answers a ping, as if its pongs were lost on the way.
	silent := time.Now()
	dead, _, err := edgetest.DialWith(t, e.URL, bearer(token(t, map[string]any{"sub": "dead"})), func(ws *websocket.Conn) {
		ws.SetPingHandler(func(string) error { return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	dead.ExpectOK()
	dead.WaitClose()
	if took := time.Since(silent); took > 2*interval+interval/2 {
		t.Errorf("dead peer dropped after %v, want within about %v", took, 2*interval)
	}
	if v := e.metric(t, "wsgate_edge_dead_peers_total"); v != "1" {
		t.Fatalf("dead peers metric %q", v)
	}
	// The peer that answers pings is still there.
	alive.Send("Client/ping", nil)
	alive.Expect("Server/pong")
}

func TestClose_UnansweredCloseFrameAbortedAfterGrace(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	// The peer reads our close frame but never answers it, and keeps its
	// end of the socket open.
	mute, _, err := edgetest.DialWith(t, e.URL, bearer(token(t, map[string]any{"sub": "mute"})), func(ws *websocket.Conn) {
		ws.SetCloseHandler(func(int, string) error { return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	mute.ExpectOK()
	publish(t, nc, "ws.ctl.close.user.mute", "")
	if code, _ := mute.WaitClose(); code != wire.CloseNormal {
		t.Fatalf("close code %d, want %d", code, wire.CloseNormal)
	}
	closed := time.Now()
	// What follows the close frame is the end of the stream, once the grace is over.
	_ = mute.WS.NetConn().SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, mute.WS.NetConn()); err != nil {
		t.Fatalf("after the close frame: %d bytes, then %v; want the end of the stream", n, err)
	}
	took := time.Since(closed)
	if took < wsconn.CloseGrace/2 || took > wsconn.CloseGrace+2*time.Second {
		t.Errorf("socket ended %v after the unanswered close frame, want about %v", took, wsconn.CloseGrace)
	}
}

func TestSlowConsumer_Closed4500WithoutHurtingOthers(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_SEND_QUEUE": "16"})
	slow := e.dial(t, map[string]any{"sub": "slow", "groups": []string{"feed"}})
	fast := e.dial(t, map[string]any{"sub": "fast", "groups": []string{"feed"}})
	// The slow client stops reading: its socket buffers fill, then its queue.
	slowWS := slow.WS
	stopped := make(chan struct{})
	slowWS.SetReadDeadline(time.Now()) // its reader errors out and stops
	go func() { <-slow.Done(); close(stopped) }()
	<-stopped

	big := `{"action":"feed","details":"` + strings.Repeat("x", 60000) + `"}`
	// Batches smaller than the queue: the fast client keeps up with each,
	// while the slow one's socket buffers, then queue, fill.
	const batches, batch = 50, 8
	for range batches {
		for range batch {
			publish(t, nc, "ws.send.group.feed", big)
		}
		for range batch {
			fast.Expect("feed")
		}
	}
	edgetest.Eventually(t, "slow consumer closed", func() bool {
		return e.metric(t, "wsgate_edge_slow_consumer_closes_total") == "1"
	})
	edgetest.Eventually(t, "close code 4500 counted", func() bool {
		return e.metric(t, `wsgate_edge_closes_total{code="4500"}`) == "1"
	})
}

func TestOrigin_AllowlistRefusesWith403(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_ALLOWED_ORIGINS": "https://app.example,https://*.example.org"})
	tok := token(t, map[string]any{"sub": "alice"})
	for origin, want := range map[string]int{
		"https://app.example":      http.StatusSwitchingProtocols,
		"https://a.example.org":    http.StatusSwitchingProtocols,
		"https://evil.example":     http.StatusForbidden,
		"https://app.example.evil": http.StatusForbidden,
	} {
		_, resp, _ := edgetest.TryDial(t, e.URL, http.Header{"Origin": {origin}, "Authorization": {"Bearer " + tok}})
		if resp == nil || resp.StatusCode != want {
			t.Fatalf("origin %s: response %v, want %d", origin, resp, want)
		}
	}
}

func TestMaxConnections_RefusedWith503(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_MAX_CONNECTIONS": "2"})
	a := e.dial(t, map[string]any{"sub": "a"})
	e.dial(t, map[string]any{"sub": "b"})
	_, resp, err := edgetest.TryDial(t, e.URL, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: %v %v, want HTTP 503", resp, err)
	}
	_ = a.WS.Close()
	<-a.Done()
	edgetest.Eventually(t, "a slot frees up", func() bool {
		c, _, err := edgetest.TryDial(t, e.URL, nil)
		if err == nil {
			_ = c.WS.Close()
		}
		return err == nil
	})
}

// TestMaxConnectionsPerUser_RefusedWith429AndClose1013: a user at the cap
// cannot add a connection on this edge, whichever way it authenticates;
// other users can; a freed slot can be taken again.
func TestMaxConnectionsPerUser_RefusedWith429AndClose1013(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_MAX_CONNECTIONS_PER_USER": "2"})
	first := e.dial(t, map[string]any{"sub": "alice"})
	e.dial(t, map[string]any{"sub": "alice", "sid": "s2"})
	e.dial(t, map[string]any{"sub": "bob"})

	refused := func(c *edgetest.Client) {
		t.Helper()
		if code, msg := c.Expect("Client/authentication:error").Error(); code != 429 {
			t.Fatalf("third connection of alice: [%d %q], want 429", code, msg)
		}
		if code, _ := c.WaitClose(); code != 1013 {
			t.Fatalf("third connection of alice closed %d, want 1013", code)
		}
	}
	refused(edgetest.Dial(t, e.URL, bearer(token(t, map[string]any{"sub": "alice"}))))
	viaFrame := edgetest.Dial(t, e.URL, nil)
	viaFrame.Send("Client/authentication", map[string]string{"token": token(t, map[string]any{"sub": "alice"})})
	refused(viaFrame)
	if v := e.metric(t, `wsgate_edge_auth_failures_total{reason="user_limit"}`); v != "2" {
		t.Fatalf("user_limit auth failures %q, want 2", v)
	}
	waitSubs(t, ns, "ws.send.user.alice", 1)

	_ = first.WS.Close()
	<-first.Done()
	edgetest.Eventually(t, "alice gets a slot back", func() bool {
		c, _, err := edgetest.TryDial(t, e.URL, bearer(token(t, map[string]any{"sub": "alice"})))
		if err != nil {
			return false
		}
		defer c.WS.Close()
		return c.Next().Action == "Client/authentication"
	})
}

func TestRateLimit_429ThenClose4429(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_RATE_LIMIT": "5", "EDGE_RATE_BURST": "5"})
	c := e.dial(t, map[string]any{"sub": "alice"})
	for range 5 {
		c.Send("Client/ping", nil)
		c.Expect("Server/pong")
	}
	for range 20 {
		if err := c.WS.WriteMessage(websocket.TextMessage, []byte(`["Client/ping",null]`)); err != nil {
			break
		}
	}
	if code, msg := c.Expect("Client/error").Error(); code != 429 {
		t.Fatalf("answer [%d %q], want 429", code, msg)
	}
	if code, _ := c.WaitClose(); code != 4429 {
		t.Fatalf("close code %d, want 4429", code)
	}
}

func TestHTTPEndpoints_ProbesMetricsAndClient(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, nil)
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/client.js", "/client.mjs", "/wsgate-worker.js"} {
		if s := e.status(p); s != http.StatusOK {
			t.Fatalf("%s: %d", p, s)
		}
	}
	e.dial(t, map[string]any{"sub": "alice"})
	if v := e.metric(t, `wsgate_edge_connections{state="authenticated"}`); v != "1" {
		t.Fatalf("connections gauge %q", v)
	}
	if v := e.metric(t, "wsgate_edge_subscriptions"); v != "1" {
		t.Fatalf("subscriptions gauge %q", v)
	}
}

func TestShutdown_ClientsGet1012AndReadinessDropsFirst(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_DRAIN_TIMEOUT": "500ms"})
	var clients []*edgetest.Client
	for range 5 {
		clients = append(clients, e.dial(t, map[string]any{"sub": "alice"}))
	}
	// Stop through the cleanup path, watching readiness from outside.
	stop := e.stop
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	edgetest.Eventually(t, "readiness 503 or gone", func() bool { return e.status("/readyz") != http.StatusOK })
	for _, c := range clients {
		if code, _ := c.WaitClose(); code != 1012 {
			t.Fatalf("close code %d, want 1012", code)
		}
	}
	<-done
}

// TestHandshake_SilentAndOversizedUpgradesAreCut: a peer that opens TCP and
// sends nothing, or only part of its upgrade request, is disconnected after
// EDGE_HANDSHAKE_TIMEOUT; an upgrade request whose header exceeds
// EDGE_MAX_HEADER_BYTES gets HTTP 431 and never becomes a connection.
func TestHandshake_SilentAndOversizedUpgradesAreCut(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_HANDSHAKE_TIMEOUT": "300ms", "EDGE_MAX_HEADER_BYTES": "4096"})
	addr := strings.TrimPrefix(e.HTTP, "http://")

	for _, sent := range []string{"", "GET /ws HTTP/1.1\r\nHost: x\r\n"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write([]byte(sent)); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(edgetest.Timeout))
		_, err = io.ReadAll(conn)
		conn.Close()
		if err != nil {
			t.Fatalf("after %q: %v, want the edge to close the connection", sent, err)
		}
		if took := time.Since(start); took > edgetest.Timeout/2 {
			t.Fatalf("after %q: closed after %v", sent, took)
		}
	}

	header := http.Header{"Authorization": {"Bearer " + token(t, map[string]any{"sub": "alice"})},
		"X-Padding": {strings.Repeat("p", 8192)}}
	_, resp, err := edgetest.TryDial(t, e.URL, header)
	if err == nil || resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversized upgrade: %v %v, want HTTP 431", resp, err)
	}
	if v := e.metric(t, `wsgate_edge_connections{state="authenticated"}`); v != "0" {
		t.Fatalf("authenticated connections %s", v)
	}
}
