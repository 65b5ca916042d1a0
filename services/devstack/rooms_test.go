package devstack_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestRooms_SDKAndHTTPJoinAgainstRealEdges: Sender.Join and POST /v1/join
// put users into a room on two edge processes with WS_PRESENCE=memory; the
// room's next message reaches every tab; Leave and POST /v1/leave take them
// out; a refusal comes back as a *MembershipError and as its HTTP code.
func TestRooms_SDKAndHTTPJoinAgainstRealEdges(t *testing.T) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	edge1 := startEdge(t, ns.ClientURL(), "edge1", "WS_PRESENCE=memory")
	edge2 := startEdge(t, ns.ClientURL(), "edge2", "WS_PRESENCE=memory")
	const key = "rooms-test-key-0123456789"
	disp := start(t, "dispatcher", "NATS_URL="+ns.ClientURL(), "DISPATCHER_ADDR=127.0.0.1:0", "DISPATCHER_API_KEYS="+key)
	api := "http://" + disp.waitLog(t, "dispatcher listening")["addr"].(string)

	dial := func(url, user string) *edgetest.Client {
		c := edgetest.Dial(t, url, http.Header(bearer(token(t, user))))
		c.ExpectOK()
		return c
	}
	alice := []*edgetest.Client{dial(edge1, "alice"), dial(edge2, "alice")}
	bob := dial(edge2, "bob")
	everyone := append([]*edgetest.Client{bob}, alice...)
	room := func(in ...*edgetest.Client) {
		t.Helper()
		expectRoom(t, nc, "room-5", "ws.send.all", in, everyone)
	}
	post := func(path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, api+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	s := dispatcher.NewSender(nc, "")
	ctx := context.Background()
	if err := s.Join(ctx, dispatcher.UserTarget("alice"), "room-5"); err != nil {
		t.Fatal(err)
	}
	room(alice...)
	if err := s.Leave(ctx, dispatcher.UserTarget("alice"), "room-5"); err != nil {
		t.Fatal(err)
	}
	room()

	if code, body := post("/v1/join", `{"target":"user","id":"bob","groups":["room-5"]}`); code != 200 || body != `{"status":"ok"}` {
		t.Fatalf("POST /v1/join: %d %s", code, body)
	}
	room(bob)
	if code, body := post("/v1/leave", `{"target":"user","id":"bob","groups":["room-5"]}`); code != 200 {
		t.Fatalf("POST /v1/leave: %d %s", code, body)
	}
	room()

	err := s.Join(ctx, dispatcher.ConnectionTarget("edge1.nope"), "room-5")
	var refused *dispatcher.MembershipError
	if !errors.As(err, &refused) || refused.Code != http.StatusNotFound {
		t.Fatalf("join of a missing connection: %v, want a 404 MembershipError", err)
	}
	if code, body := post("/v1/join", `{"target":"conn","id":"edge1.nope","groups":["room-5"]}`); code != 404 || !strings.Contains(body, "no such connection") {
		t.Fatalf("POST /v1/join of a missing connection: %d %s", code, body)
	}
}

// TestRooms_ConnJoinEndsWithTheConnection: DESIGN §9, "a connection's own
// joins end with it". With stored memberships on (WS_PRESENCE=memory), one
// of a user's two connections of one session is joined by
// ws.ctl.join.conn.<edge>.<conn>; the other is never in the group. Once
// the joined connection has ended (its Client/disconnection published), a
// new connection of the same user and session, on the same edge, is not in
// the group either: a message to the group does not reach it, the marker
// sent behind it to the user does.
//
// Mutations that fail it: a conn-kind join stored under the connection's
// session or user key (the new connection gets the group from the store:
// "room" where the marker was expected), or an edge that keeps a closed
// connection's joins for the next connection of its session.
func TestRooms_ConnJoinEndsWithTheConnection(t *testing.T) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	edge1 := startEdge(t, ns.ClientURL(), "edge1", "WS_PRESENCE=memory")
	edge2 := startEdge(t, ns.ClientURL(), "edge2", "WS_PRESENCE=memory")
	tok := edgetest.Token(t, secret, map[string]any{"sub": "dana", "sid": "sd-1"})
	dial := func(url string) *edgetest.Client {
		c := edgetest.Dial(t, url, http.Header(bearer(tok)))
		c.ExpectOK()
		return c
	}
	joined, other := dial(edge1), dial(edge2)

	// The joined connection's id, from the envelope of an action it sends.
	whoami, err := nc.SubscribeSync("ws.in.whoami")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	joined.Send("whoami", nil)
	msg, err := whoami.NextMsg(edgetest.Timeout)
	if err != nil {
		t.Fatal(err)
	}
	env, err := wire.DecodeEnvelope(msg.Data)
	if err != nil || !strings.HasPrefix(env.Connection, "edge1.") {
		t.Fatalf("whoami envelope %s: %v", msg.Data, err)
	}
	conn := env.Connection

	send := func(in []*edgetest.Client, all ...*edgetest.Client) {
		t.Helper()
		expectRoom(t, nc, "room-c", "ws.send.user.dana", in, all)
	}

	answer, err := nc.Request("ws.ctl.join.conn."+conn, []byte(`{"groups":["room-c"]}`), edgetest.Timeout)
	if err != nil || string(answer.Data) != `{"ok":true}` {
		t.Fatalf("join of %s: %v %s", conn, err, dataOf(answer))
	}
	send([]*edgetest.Client{joined}, joined, other) // in force on it, and only on it

	gone, err := nc.SubscribeSync("ws.in." + wire.ActionDisconnection)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = joined.WS.Close()
	for {
		msg, err := gone.NextMsg(edgetest.Timeout)
		if err != nil {
			t.Fatalf("no Client/disconnection of %s: %v", conn, err)
		}
		if env, err := wire.DecodeEnvelope(msg.Data); err == nil && env.Connection == conn {
			break
		}
	}

	next := dial(edge1) // same user, same session, same edge
	send(nil, next, other)
}

// expectRoom publishes ["room"] to group, then ["marker"] on marker: each
// client of in gets the group's message first, every other of all only the
// marker.
func expectRoom(t *testing.T, nc *nats.Conn, group, marker string, in, all []*edgetest.Client) {
	t.Helper()
	if err := nc.Publish("ws.send.group."+group, []byte(`{"action":"room"}`)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(marker, []byte(`{"action":"marker"}`)); err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		if slices.Contains(in, c) {
			c.Expect("room")
		}
		c.Expect("marker")
	}
}

// dataOf is a message's data, or "" for none.
func dataOf(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}
