package edge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

func TestInbound_EnvelopeIdentityComesFromTheToken(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, map[string]string{"EDGE_ID": "edge-1"})
	in := subscribe(t, nc, "ws.in.>")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := edgetest.Dial(t, e.URL, http.Header{
		"Authorization": {"Bearer " + token(t, map[string]any{"sub": "alice", "sid": "s1", "groups": []string{"red"}})},
		"User-Agent":    {"wsgate-test/1"},
	})
	c.ExpectOK()
	// A frame that tries to pass itself off as someone else.
	forged := map[string]any{"user": "admin", "session": "x", "groups": []string{"admins"}, "connection": "edge-9.1"}
	c.Send("profile/update", forged, 42)
	c.Send("profile/update", "again")

	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, want := range []string{"Client/authentication", "profile/update", "profile/update"} {
		m, err := in.NextMsg(edgetest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		if m.Subject != "ws.in."+want {
			t.Fatalf("subject %s, want ws.in.%s", m.Subject, want)
		}
		if err := check.Check(schemacheck.Envelope, m.Data); err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get("Nats-Msg-Id")
		if id == "" || ids[id] {
			t.Fatalf("Nats-Msg-Id %q missing or repeated", id)
		}
		ids[id] = true
		var env map[string]any
		_ = json.Unmarshal(m.Data, &env)
		if env["user"] != "alice" || env["session"] != "s1" || env["edge"] != "edge-1" ||
			env["ip"] != "127.0.0.1" || env["user_agent"] != "wsgate-test/1" || env["language"] != "en" {
			t.Fatalf("envelope identity %v", env)
		}
		if want == "profile/update" && env["ref"] == float64(42) {
			if d := env["details"].(map[string]any); d["user"] != "admin" {
				t.Fatalf("details were altered: %v", d)
			}
		}
	}
}

// TestInbound_PublishFailureAnswers503: when the edge cannot publish a
// client's frame to NATS, the client is answered
// ["<action>:error",[503,"not delivered: messaging is unavailable"],<ref>],
// and the connection stays open. While NATS is away nats.go buffers
// publishes (8 MiB, natsconn's reconnect buffer), so frames near the size
// limit are sent until that buffer is full and the publish fails. Every frame
// is then either answered 503 or delivered once NATS is back, never both and
// never neither. A plain subscriber could miss what the edge flushes as soon
// as it reconnects, so a JetStream stream, kept on disk across the restart
// and recovered before the server takes clients, records it.
func TestInbound_PublishFailureAnswers503(t *testing.T) {
	const (
		maxFrame  = 64 << 10 // EDGE_MAX_MESSAGE_BYTES below
		maxFrames = 400      // 25 MiB: well past the 8 MiB buffer
	)
	ctx, cancel := context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	store := t.TempDir()
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: store})
	addr := ns.Addr().(*net.TCPAddr)
	js, err := jetstream.New(edgetest.Connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "uploads", Subjects: []string{"ws.in.upload"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, ns, map[string]string{"EDGE_MAX_MESSAGE_BYTES": strconv.Itoa(maxFrame), "EDGE_RATE_LIMIT": "0"})
	c := e.dial(t, map[string]any{"sub": "alice"})

	ns.Shutdown()
	ns.WaitForShutdown()
	edgetest.Eventually(t, "edge not ready without NATS", func() bool { return e.status("/readyz") == http.StatusServiceUnavailable })

	// Each upload is followed by a ping with the same ref: the pong says the
	// upload was taken (buffered), an error before it says it was not.
	details := strings.Repeat("x", maxFrame-32)
	failed := 0
	for ref := 1; failed == 0; ref++ {
		if ref > maxFrames {
			t.Fatalf("no publish failure after %d frames of %d bytes while NATS was down", maxFrames, maxFrame)
		}
		c.SendRaw(fmt.Appendf(nil, `["upload",%q,%d]`, details, ref))
		c.Send("Client/ping", nil, ref)
		f := c.Next()
		if f.Action == "upload:error" {
			want := fmt.Sprintf(`["upload:error",[503,"not delivered: messaging is unavailable"],%d]`, ref)
			if string(f.Raw) != want {
				t.Fatalf("got %s, want %s", f, want)
			}
			failed = ref
			f = c.Next()
		}
		if f.Action != "Server/pong" || string(f.Ref) != strconv.Itoa(ref) {
			t.Fatalf("got %s, want the pong of ref %d", f, ref)
		}
	}
	buffered := failed - 1
	t.Logf("%d frames buffered, frame %d answered 503", buffered, failed)
	if v := e.metricSum(t, "wsgate_edge_nats_publish_errors_total"); v != 1 {
		t.Fatalf("wsgate_edge_nats_publish_errors_total %v, want 1", v)
	}
	select {
	case <-c.Done():
		t.Fatal("the connection ended after the failed publish")
	default:
	}

	ns2 := edgetest.RunNATSWith(t, &natsserver.Options{Host: addr.IP.String(), Port: addr.Port, JetStream: true, StoreDir: store})
	edgetest.Eventually(t, "edge ready again", func() bool { return e.status("/readyz") == http.StatusOK })
	// Reading the buffered frames back gets a deadline of its own: under the
	// race detector on a busy machine, the part before can take most of one.
	ctx, cancel = context.WithTimeout(context.Background(), edgetest.Timeout)
	defer cancel()
	js, err = jetstream.New(edgetest.Connect(t, ns2.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "uploads")
	if err != nil {
		t.Fatal(err)
	}
	var stored uint64
	edgetest.Eventually(t, "buffered frames stored", func() bool {
		info, err := stream.Info(ctx)
		if err == nil {
			stored = info.State.Msgs
		}
		return stored >= uint64(buffered)
	})
	if stored != uint64(buffered) {
		t.Fatalf("%d frames reached NATS, want the %d buffered ones", stored, buffered)
	}
	for seq := uint64(1); seq <= stored; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Ref int `json:"ref"`
		}
		if err := json.Unmarshal(m.Data, &env); err != nil || env.Ref != int(seq) {
			t.Fatalf("message %d has ref %d (%v), want %d", seq, env.Ref, err, seq)
		}
	}
}

func TestBadFrames_AnsweredThenClosed1008(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	in := subscribe(t, nc, "ws.in.>")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Frames that are valid WebSocket text but not wsgate frames: the
	// application-level rule of DESIGN §2. (Invalid UTF-8 and binary
	// messages fail the connection at once: TestWebSocketProtocolViolations.)
	cases := []struct {
		name, frame, reason string
	}{
		{"not json", `{oops`, "not a JSON array"},
		{"object", `{"action":"x"}`, "not a JSON array"},
		{"empty array", `[]`, "want [action, details]"},
		{"five elements", `["a",1,2,"m",3]`, "want [action, details]"},
		{"action not a string", `[1,2]`, "action is not a string"},
		{"empty action", `["",1]`, "wire: invalid action: empty"},
		{"dot in action", `["a.b",1]`, "is not one of"},
		{"star in action", `["a*",1]`, "is not one of"},
		{"gt in action", `["a>",1]`, "is not one of"},
		{"space in action", `["a b",1]`, "is not one of"},
		{"control char in action", `["a\u0001",1]`, "is not one of"},
		{"long action", `["` + strings.Repeat("a", 129) + `",1]`, "longer than 128"},
		{"object ref", `["a",1,{"x":1}]`, "ref must be a string or an integer"},
		{"long ref", `["a",1,"` + strings.Repeat("r", 65) + `"]`, "ref is longer than 64"},
		{"float ref", `["a",1,1.5]`, "ref must be a string or an integer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, map[string]any{"sub": "alice"})
			send := func() {
				if err := c.WS.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
					t.Fatal(err)
				}
			}
			send()
			f := c.Expect("Client/error")
			if code, msg := f.Error(); code != 400 || !strings.Contains(msg, tc.reason) {
				t.Fatalf("answer [%d %q], want 400 containing %q", code, msg, tc.reason)
			}
			send()
			if code, _ := c.WaitClose(); code != 1008 {
				t.Fatalf("close code %d, want 1008", code)
			}
		})
	}
	// Only the lifecycle events reached NATS: no bad frame became a subject.
	for {
		m, err := in.NextMsg(0)
		if err != nil {
			break
		}
		if !strings.HasPrefix(m.Subject, "ws.in.Client/") {
			t.Fatalf("bad frame reached NATS on %s", m.Subject)
		}
	}
}

func TestReservedActions_RefusedAndNeverPublished(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	in := subscribe(t, nc, "ws.in.>")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t, map[string]any{"sub": "alice"})
	for _, a := range []string{"Client/disconnection", "Server/close", "Client/whatever"} {
		c.Send(a, nil)
		if code, msg := c.Expect("Client/error").Error(); code != 400 || !strings.Contains(msg, "reserved") {
			t.Fatalf("%s answered [%d %q]", a, code, msg)
		}
	}
	c.Send("Client/ping", nil)
	c.Expect("Server/pong")
	// An action published after them: one connection's publishes reach
	// NATS in order, so anything the frames above published comes first.
	c.Send("after", nil)
	for {
		m, err := in.NextMsg(edgetest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		switch m.Subject {
		case "ws.in.after":
			return
		case "ws.in.Client/authentication": // the edge's own event for this connection
		default:
			t.Fatalf("a client's frame was published to %s: %s", m.Subject, m.Data)
		}
	}
}

func TestOversizedFrame_Closes1009(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_MAX_MESSAGE_BYTES": "1024"})
	c := e.dial(t, map[string]any{"sub": "alice"})
	c.Send("ok", strings.Repeat("x", 900))
	c.Send("big", strings.Repeat("x", 2000))
	if code, _ := c.WaitClose(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
}

// TestWebSocketProtocolViolations: frames that break RFC 6455 (written raw
// under a real handshake) fail the connection at once with the code DESIGN
// §2 gives them — 1002 for protocol errors, 1007 for text that is not UTF-8,
// 1003 for a binary message — and nothing in or after them is handled: a
// valid frame sent right behind the bad one reaches neither NATS nor an
// answer.
func TestWebSocketProtocolViolations(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e := startEdge(t, ns, nil)
	in := subscribe(t, nc, "ws.in.after")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	masked := func(b0 byte, payload []byte) []byte {
		key := [4]byte{1, 2, 3, 4}
		f := []byte{b0, 0x80 | byte(len(payload)), key[0], key[1], key[2], key[3]}
		for i, c := range payload {
			f = append(f, c^key[i%4])
		}
		return f
	}
	closeOf := func(code int, reason string) []byte {
		return masked(0x88, append([]byte{byte(code >> 8), byte(code)}, reason...))
	}
	after := masked(0x81, []byte(`["after",1]`))
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int
	}{
		{"unmasked text frame", append([]byte{0x81, 7}, `["a",1]`...), 1002},
		{"reserved bit", masked(0x80|0x40|0x1, []byte(`["a",1]`)), 1002},
		{"unknown data opcode", masked(0x80|0x3, []byte("x")), 1002},
		{"unknown control opcode", masked(0x80|0xB, nil), 1002},
		{"fragmented ping", masked(0x9, nil), 1002},
		{"ping of 126 bytes", append([]byte{0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0}, make([]byte, 126)...), 1002},
		{"continuation without a message", masked(0x80, []byte("x")), 1002},
		{"new message inside a fragmented one", append(masked(0x1, []byte(`["a",`)), masked(0x81, []byte(`["b",1]`))...), 1002},
		{"close frame of one byte", masked(0x88, []byte{3}), 1002},
		{"close frame of 126 bytes", append([]byte{0x88, 0x80 | 126, 0, 126, 0, 0, 0, 0, 0x03, 0xE8}, bytes.Repeat([]byte("r"), 124)...), 1002},
		{"close code 0", closeOf(0, ""), 1002},
		{"close code 999", closeOf(999, ""), 1002},
		{"close code 1004", closeOf(1004, ""), 1002},
		{"close code 1005 on the wire", closeOf(1005, ""), 1002},
		{"close code 1006 on the wire", closeOf(1006, ""), 1002},
		{"close code 1015", closeOf(1015, ""), 1002},
		{"close code 1016", closeOf(1016, ""), 1002},
		{"close code 1100", closeOf(1100, ""), 1002},
		{"close code 2000", closeOf(2000, ""), 1002},
		{"close code 2999", closeOf(2999, ""), 1002},
		{"close reason not UTF-8", closeOf(1000, "\xff"), 1002},
		{"binary message", masked(0x82, []byte(`["a",1]`)), 1003},
		{"text not UTF-8", masked(0x81, []byte("[\"a\",\"\xff\"]")), 1007},
		{"text not UTF-8 in the first fragment", masked(0x1, []byte("[\"a\",\"\xed\xa0\x80")), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(t, map[string]any{"sub": "alice"})
			if _, err := c.WS.UnderlyingConn().Write(append(tc.frame, after...)); err != nil {
				t.Fatal(err)
			}
			if code, _ := c.WaitClose(); code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
		})
	}
	if m, err := in.NextMsg(0); err == nil {
		t.Fatalf("a frame after a violation was handled: %s", m.Data)
	}
}
