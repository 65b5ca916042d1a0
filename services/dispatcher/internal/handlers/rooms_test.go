package handlers_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/handlers"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// roomHarness runs the built-in handlers on a real NATS with the parts of
// the system they ask stood in for by responders: an edge answering
// ws.ctl.join/leave with edgeAnswer, and a presence service answering
// ws.presence.> with presenceAnswer (nil: no responder, as when none runs).
type roomHarness struct {
	nc    *nats.Conn
	sends chan *nats.Msg // what reaches <prefix>.send.>: the clients

	mu       sync.Mutex
	requests []*nats.Msg // ctl and presence requests, in order
}

func startRooms(t *testing.T, edgeAnswer, presenceAnswer func(subject string) string) *roomHarness {
	t.Helper()
	srv := natstest.RunServer(t)
	h := &roomHarness{nc: natstest.Connect(t, srv), sends: make(chan *nats.Msg, 256)}
	sub, err := h.nc.ChanSubscribe("ws.send.>", h.sends)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	for subject, answer := range map[string]func(string) string{"ws.ctl.>": edgeAnswer, "ws.presence.>": presenceAnswer} {
		if answer == nil {
			continue
		}
		sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
			h.mu.Lock()
			h.requests = append(h.requests, m)
			h.mu.Unlock()
			_ = m.Respond([]byte(answer(m.Subject)))
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	dnc := natstest.Connect(t, srv)
	d, err := dispatcher.New(dnc)
	if err != nil {
		t.Fatal(err)
	}
	if err := handlers.Register(d); err != nil {
		t.Fatalf("Register: %v", err)
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
	})
	return h
}

func ok(string) string { return `{"ok":true}` }

// send publishes action from user on natstest.Connection, in groups (none
// given: the dev tokens' "demo").
func (h *roomHarness) send(t *testing.T, action, user, details string, groups ...string) wire.Envelope {
	t.Helper()
	env := envelope(action, user, details)
	env.Groups = []string{"demo"}
	if groups != nil {
		env.Groups = groups
	}
	natstest.Publish(t, h.nc, "", env)
	return env
}

// next returns the next message sent to clients, checked against the
// outbound schema.
func (h *roomHarness) next(t *testing.T) natstest.Received {
	t.Helper()
	select {
	case m := <-h.sends:
		natstest.Check(t, schemacheck.Outbound, m.Data)
		out, err := wire.DecodeOutbound(m.Data)
		if err != nil {
			t.Fatalf("%s: %v", m.Subject, err)
		}
		return natstest.Received{Subject: m.Subject, Data: m.Data, Outbound: out}
	case <-time.After(natstest.Wait):
		t.Fatal("nothing sent to clients")
		return natstest.Received{}
	}
}

// expect checks the next message: its subject, action and details.
func (h *roomHarness) expect(t *testing.T, subject, action, details string) natstest.Received {
	t.Helper()
	r := h.next(t)
	if r.Subject != subject || r.Outbound.Action != action || !sameJSON(t, r.Outbound.Details, details) {
		t.Fatalf("got %s on %s, want %s %s on %s", r.Data, r.Subject, action, details, subject)
	}
	return r
}

func (h *roomHarness) requested() []*nats.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*nats.Msg(nil), h.requests...)
}

func sameJSON(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("details %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

const conn = "ws.send.conn." + natstest.Connection

func TestHandlers_RoomJoinJoinsTheUserThenTellsTheRoom(t *testing.T) {
	h := startRooms(t, ok, nil)
	env := h.send(t, "room/join", "alice", `{"room":"room-5"}`)
	r := h.expect(t, conn, "room/join", `{"room":"room-5","user":"alice"}`)
	if string(r.Outbound.Ref) != string(env.Ref) {
		t.Errorf("ref %s, want %s", r.Outbound.Ref, env.Ref)
	}
	h.expect(t, "ws.send.group.room-5", "room/joined", `{"room":"room-5","user":"alice"}`)
	reqs := h.requested()
	if len(reqs) != 1 || reqs[0].Subject != "ws.ctl.join.user.alice" || !sameJSON(t, reqs[0].Data, `{"groups":["room-5"]}`) {
		t.Fatalf("edge got %d requests, want one join of user alice to room-5", len(reqs))
	}
}

func TestHandlers_RoomLeaveLeavesThenTellsTheRoomAndTheUser(t *testing.T) {
	h := startRooms(t, ok, nil)
	h.send(t, "room/leave", "alice", `{"room":"room-5"}`)
	h.expect(t, conn, "room/leave", `{"room":"room-5","user":"alice"}`)
	h.expect(t, "ws.send.group.room-5", "room/left", `{"room":"room-5","user":"alice"}`)
	h.expect(t, "ws.send.user.alice", "room/left", `{"room":"room-5","user":"alice"}`)
	if reqs := h.requested(); len(reqs) != 1 || reqs[0].Subject != "ws.ctl.leave.user.alice" {
		t.Fatalf("edge got %d requests, want one leave of user alice", len(reqs))
	}
}

func TestHandlers_RoomJoinRefusals(t *testing.T) {
	tests := []struct {
		name, user, details string
		edge                func(string) string // nil: no edge runs
		code                int
		reason              string
		asked               bool // whether the edge is asked
	}{
		{"anonymous", "", `{"room":"room-5"}`, ok, 401, "sign in to join or leave rooms", false},
		{"not an object", "alice", `"room-5"`, ok, 400, `details must be {"room": "room-<name>"}`, false},
		{"no prefix", "alice", `{"room":"admins"}`, ok, 400, "", false},
		{"prefix only", "alice", `{"room":"room-"}`, ok, 400, "", false},
		{"dot", "alice", `{"room":"room-a.b"}`, ok, 400, "", false},
		{"wildcard", "alice", `{"room":"room->"}`, ok, 400, "", false},
		{"too long", "alice", `{"room":"room-` + strings.Repeat("x", handlers.MaxRoomName-4) + `"}`, ok, 400, "", false},
		{"edge refuses", "alice", `{"room":"room-5"}`, func(string) string {
			return `{"error":{"code":503,"message":"not confirmed by every edge"}}`
		}, 503, "not confirmed by every edge", true},
		{"no edge", "alice", `{"room":"room-5"}`, nil, 503, "rooms are unavailable, try again", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startRooms(t, tt.edge, nil)
			for _, action := range []string{"room/join", "room/leave"} {
				h.send(t, action, tt.user, tt.details)
				wantError(t, h.next(t), conn, action+":error", tt.code, tt.reason)
			}
			if n := len(h.requested()); (n > 0) != tt.asked {
				t.Fatalf("edge asked %d times, want asked=%t", n, tt.asked)
			}
		})
	}
}

func TestHandlers_RoomSendReachesTheRoomFromMembersOnly(t *testing.T) {
	h := startRooms(t, ok, nil)
	h.send(t, "room/send", "alice", `{"room":"room-5","text":" hi room "}`, "demo", "room-5")
	r := h.next(t)
	var msg struct{ Room, From, Text, TS string }
	if err := json.Unmarshal(r.Outbound.Details, &msg); err != nil {
		t.Fatal(err)
	}
	if r.Subject != "ws.send.group.room-5" || r.Outbound.Action != "room/message" ||
		msg.Room != "room-5" || msg.From != "alice" || msg.Text != "hi room" || msg.TS == "" {
		t.Fatalf("got %s on %s", r.Data, r.Subject)
	}
	tests := []struct {
		name, details string
		groups        []string
		code          int
	}{
		{"not in the room", `{"room":"room-5","text":"hi"}`, []string{"demo", "room-6"}, 403},
		{"not a room", `{"room":"demo","text":"hi"}`, []string{"demo"}, 400},
		{"empty text", `{"room":"room-5","text":" "}`, []string{"demo", "room-5"}, 400},
		{"not an object", `[]`, []string{"demo", "room-5"}, 400},
		{"not a demo user", `{"room":"room-5","text":"hi"}`, []string{"room-5"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.send(t, "room/send", "alice", tt.details, tt.groups...)
			wantError(t, h.next(t), conn, "room/send:error", tt.code, "")
		})
	}
}

func TestHandlers_PresenceWhoAsksThePresenceService(t *testing.T) {
	h := startRooms(t, nil, func(subject string) string {
		if subject == "ws.presence.user.bob" {
			return `{"user":"bob","online":true,"connections":[` +
				`{"connection":"e1.a","session":"s1","since":"2026-01-01T00:00:00Z"},` +
				`{"connection":"e2.b","session":"s2","since":"2026-01-01T00:00:00Z"}]}`
		}
		return `{"group":"` + strings.TrimPrefix(subject, "ws.presence.group.") + `","users":2,"connections":3,"members":["alice","bob"]}`
	})
	h.send(t, "presence/who", "alice", `null`, "demo", "room-5")
	h.expect(t, conn, "presence/who", `{"group":"demo","users":2,"connections":3,"members":["alice","bob"],"rooms":["room-5"]}`)
	h.send(t, "presence/who", "alice", `{"group":"room-5"}`, "demo")
	h.expect(t, conn, "presence/who", `{"group":"room-5","users":2,"connections":3,"members":["alice","bob"],"rooms":[]}`)
	h.send(t, "presence/who", "", `{"user":"bob"}`, "demo")
	h.expect(t, conn, "presence/who", `{"user":"bob","online":true,"connections":2,"rooms":[]}`)

	reqs := h.requested()
	want := []struct{ subject, data string }{
		{"ws.presence.group.demo", `{"limit":100}`},
		{"ws.presence.group.room-5", `{"limit":100}`},
		{"ws.presence.user.bob", ``},
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d presence requests, want %d", len(reqs), len(want))
	}
	for i, w := range want {
		if reqs[i].Subject != w.subject || string(reqs[i].Data) != w.data {
			t.Errorf("request %d: %s %s, want %s %s", i, reqs[i].Subject, reqs[i].Data, w.subject, w.data)
		}
	}
}

func TestHandlers_PresenceWhoRefusals(t *testing.T) {
	off := func(string) string { return `{"error":{"code":503,"message":"presence is off (WS_PRESENCE=off)"}}` }
	tests := []struct {
		name, details string
		presence      func(string) string
		code          int
		reason        string
	}{
		{"presence off", `null`, off, 503, "presence is off (WS_PRESENCE=off)"},
		{"no presence service", `{"user":"bob"}`, nil, 503, "presence is unavailable, try again"},
		{"group not the demo's", `{"group":"admins"}`, off, 400, ""},
		{"both group and user", `{"group":"demo","user":"bob"}`, off, 400, ""},
		{"bad user", `{"user":"a.b"}`, off, 400, ""},
		{"not an object", `[1]`, off, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := startRooms(t, nil, tt.presence)
			h.send(t, "presence/who", "alice", tt.details)
			wantError(t, h.next(t), conn, "presence/who:error", tt.code, tt.reason)
		})
	}
}

func TestHandlers_PresenceWatchJoinsTheConnectionToTheWatchers(t *testing.T) {
	h := startRooms(t, ok, nil)
	h.send(t, "presence/watch", "", `null`)
	h.expect(t, conn, "presence/watch", `{"group":"demo-presence"}`)
	reqs := h.requested()
	if len(reqs) != 1 || reqs[0].Subject != "ws.ctl.join.conn."+natstest.Connection || !sameJSON(t, reqs[0].Data, `{"groups":["demo-presence"]}`) {
		t.Fatalf("edge got %d requests, want one join of the connection to demo-presence", len(reqs))
	}
}

func TestHandlers_UserEventsArePushedToTheWatchers(t *testing.T) {
	h := startRooms(t, nil, nil)
	h.send(t, "Client/online", "bob", `{"user":"bob"}`)
	h.expect(t, "ws.send.group.demo-presence", "presence/online", `{"user":"bob"}`)
	h.send(t, "Client/offline", "bob", `{"user":"bob"}`)
	h.expect(t, "ws.send.group.demo-presence", "presence/offline", `{"user":"bob"}`)
}

// TestHandlers_DemoActionsServeDemoUsersOnly: a connection whose token does
// not grant group demo can neither join rooms nor learn who is online, and
// nothing is asked of the edge or the presence service for it.
func TestHandlers_DemoActionsServeDemoUsersOnly(t *testing.T) {
	answer := func(string) string { return `{"ok":true}` }
	h := startRooms(t, answer, answer)
	for _, tt := range []struct{ action, details string }{
		{"room/join", `{"room":"room-5"}`},
		{"room/leave", `{"room":"room-5"}`},
		{"room/send", `{"room":"room-5","text":"hi"}`},
		{"presence/who", `null`},
		{"presence/who", `{"user":"bob"}`},
		{"presence/watch", `null`},
	} {
		h.send(t, tt.action, "alice", tt.details, "g1", "room-5")
		wantError(t, h.next(t), conn, tt.action+":error", 403, "rooms and presence serve the demo's users only (group demo)")
	}
	if n := len(h.requested()); n != 0 {
		t.Fatalf("%d requests made for a connection outside group demo", n)
	}
}
