package edge_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// gorilla's client offers "permessage-deflate; server_no_context_takeover;
// client_no_context_takeover" and reads compressed frames transparently.
var deflateDialer = websocket.Dialer{EnableCompression: true, HandshakeTimeout: edgetest.Timeout}

// dialGorilla opens a connection with dialer for user, waits for the
// edge's ok and returns it with the extension the edge accepted.
func dialGorilla(t *testing.T, e *testEdge, dialer *websocket.Dialer, user string) (*websocket.Conn, string) {
	t.Helper()
	ws, resp, err := dialer.Dial(e.URL, bearer(token(t, map[string]any{"sub": user})))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if got := readText(t, ws); got != `["Client/authentication","ok"]` {
		t.Fatalf("first message %q, want the ok", got)
	}
	return ws, resp.Header.Get("Sec-WebSocket-Extensions")
}

func readText(t *testing.T, ws *websocket.Conn) string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(edgetest.Timeout))
	op, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if op != websocket.TextMessage {
		t.Fatalf("message of type %d", op)
	}
	return string(data)
}

// realisticJSON is about n bytes of the JSON an application broadcasts: a
// list of chat messages with ids, users and timestamps.
func realisticJSON(n int) json.RawMessage {
	var b strings.Builder
	b.WriteString(`{"room":"lobby-42","messages":[`)
	users := []string{"alice", "bob", "carol", "dmitri", "eve"}
	for i := 0; b.Len() < n-40; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"user":"%s","at":"2026-12-07T00:%02d:%02dZ","text":"message %d from %s"}`,
			1000+i*7, users[i%len(users)], i%60, (i*13)%60, i, users[(i*3)%len(users)])
	}
	b.WriteString(`]}`)
	return json.RawMessage(b.String())
}

// TestCompression_BroadcastBuiltOnce: with EDGE_COMPRESSION=on, gorilla
// clients that offer permessage-deflate negotiate it, their compressed
// messages arrive inflated (a round trip through an echo), and a broadcast to
// compressing and plain clients at once reaches every one of them correctly
// with one compression for the whole edge. A message below the threshold,
// or one whose recipients do not compress, costs no compression.
func TestCompression_BroadcastBuiltOnce(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_COMPRESSION": "on", "EDGE_RATE_LIMIT": "0"})
	echo, err := nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		var env wire.Envelope
		if json.Unmarshal(m.Data, &env) != nil {
			return
		}
		_ = nc.Publish("ws.send.conn."+env.Connection, wire.AppendOutbound(nil, &wire.Outbound{Action: "echo", Details: env.Details}))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	z1, ext := dialGorilla(t, e, &deflateDialer, "zed1")
	if want := "permessage-deflate; server_no_context_takeover; client_no_context_takeover"; ext != want {
		t.Fatalf("extensions %q, want %q", ext, want)
	}
	z2, _ := dialGorilla(t, e, &deflateDialer, "zed2")
	plain, ext := dialGorilla(t, e, websocket.DefaultDialer, "plain")
	if ext != "" {
		t.Fatalf("a client that offered nothing got %q", ext)
	}
	raw, _ := dialRawExt(t, e.URL, token(t, map[string]any{"sub": "raw"}), "permessage-deflate")
	edgetest.Eventually(t, "compressed connections counted", func() bool {
		return e.metricSum(t, "wsgate_edge_connections_compressed_total") == 3
	})

	// Round trip: gorilla compresses what it sends (its default once
	// negotiated); the edge inflates it for NATS and compresses the echo.
	details := realisticJSON(2048)
	frame, _ := json.Marshal([]any{"echo", details})
	if err := z1.WriteMessage(websocket.TextMessage, frame); err != nil {
		t.Fatal(err)
	}
	want := string(wire.AppendServerFrame(nil, "echo", details, nil))
	if got := readText(t, z1); got != want {
		t.Fatalf("echo %.80q…, want %.80q…", got, want)
	}
	edgetest.Eventually(t, "the echo compressed once", func() bool {
		return e.metricSum(t, "wsgate_edge_deliveries_compressed_total") == 1
	})

	// A broadcast to everyone: one compression, four correct messages.
	big := realisticJSON(2048)
	if err := nc.Publish("ws.send.all", wire.AppendOutbound(nil, &wire.Outbound{Action: "news", Details: big})); err != nil {
		t.Fatal(err)
	}
	want = string(wire.AppendServerFrame(nil, "news", big, nil))
	for name, ws := range map[string]*websocket.Conn{"zed1": z1, "zed2": z2, "plain": plain} {
		if got := readText(t, ws); got != want {
			t.Errorf("%s got %.80q…, want %.80q…", name, got, want)
		}
	}
	raw.waitEvents(1)
	raw.mu.Lock()
	rawGot := raw.events
	raw.mu.Unlock()
	if len(rawGot) != 1 || rawGot[0].data != want {
		t.Errorf("raw client got %v, want the broadcast", rawGot)
	}
	// Then a small broadcast, and a large message for the plain client
	// alone: neither is compressed.
	if err := nc.Publish("ws.send.all", wire.AppendOutbound(nil, &wire.Outbound{Action: "tick", Details: json.RawMessage(`{"n":1}`)})); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ws.send.user.plain", wire.AppendOutbound(nil, &wire.Outbound{Action: "solo", Details: big})); err != nil {
		t.Fatal(err)
	}
	tick := `["tick",{"n":1}]`
	for name, ws := range map[string]*websocket.Conn{"zed1": z1, "zed2": z2, "plain": plain} {
		if got := readText(t, ws); got != tick {
			t.Errorf("%s got %.80q, want %q", name, got, tick)
		}
	}
	if got, want := readText(t, plain), string(wire.AppendServerFrame(nil, "solo", big, nil)); got != want {
		t.Errorf("plain got %.80q…, want the solo message", got)
	}
	if got := e.metricSum(t, "wsgate_edge_deliveries_compressed_total"); got != 2 {
		t.Errorf("%v compressions, want 2: the echo and the broadcast, once each", got)
	}
	raw.waitEvents(2)
	raw.close(wire.CloseNormal, "")
	raw.waitDrop()
	if raw.z.inflated != 1 {
		t.Errorf("raw client inflated %d messages, want 1 (the broadcast; the tick is below the threshold)", raw.z.inflated)
	}
}

// TestCompression_ZipBombCloses1009: the message size limit applies to the
// inflated message: a small compressed frame that inflates past
// EDGE_MAX_MESSAGE_BYTES closes the connection with 1009.
func TestCompression_ZipBombCloses1009(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_COMPRESSION": "on", "EDGE_MAX_MESSAGE_BYTES": "65536"})
	ws, _ := dialGorilla(t, e, &deflateDialer, "bomber")
	frame, _ := json.Marshal([]any{"echo", strings.Repeat("a", 4<<20)})
	if err := ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(edgetest.Timeout))
	_, _, err := ws.ReadMessage()
	if !websocket.IsCloseError(err, wire.CloseTooLarge) {
		t.Fatalf("read after the bomb: %v, want close 1009", err)
	}
}

// TestCompression_OffIsNotNegotiated: with EDGE_COMPRESSION off (the
// default), an offer is ignored and messages go plain.
func TestCompression_OffIsNotNegotiated(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	ws, ext := dialGorilla(t, e, &deflateDialer, "zed")
	if ext != "" {
		t.Fatalf("extensions %q with compression off", ext)
	}
	raw, ext := dialRawExt(t, e.URL, token(t, map[string]any{"sub": "raw"}), "permessage-deflate")
	if ext != "" {
		t.Fatalf("raw client: extensions %q with compression off", ext)
	}
	big := realisticJSON(2048)
	if err := nc.Publish("ws.send.all", wire.AppendOutbound(nil, &wire.Outbound{Action: "news", Details: big})); err != nil {
		t.Fatal(err)
	}
	want := string(wire.AppendServerFrame(nil, "news", big, nil))
	if got := readText(t, ws); got != want {
		t.Errorf("got %.80q…, want the broadcast", got)
	}
	// The raw client refuses a frame with RSV1: it ends its reader.
	raw.waitEvents(1)
	raw.mu.Lock()
	got := raw.events
	raw.mu.Unlock()
	if len(got) != 1 || got[0].data != want {
		t.Errorf("raw client got %v, want the plain broadcast", got)
	}
	if n := e.metricSum(t, "wsgate_edge_deliveries_compressed_total"); n != 0 {
		t.Errorf("%v compressions with compression off", n)
	}
}
