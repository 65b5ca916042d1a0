package devstack_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"

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
		for _, m := range []string{`{"action":"room"}`, `{"action":"marker"}`} {
			subj := "ws.send.group.room-5"
			if strings.Contains(m, "marker") {
				subj = "ws.send.all"
			}
			if err := nc.Publish(subj, []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range everyone {
			for _, x := range in {
				if x == c {
					c.Expect("room")
				}
			}
			c.Expect("marker")
		}
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
