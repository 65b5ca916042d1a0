package handlers_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/handlers"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness runs the built-in handlers on a real NATS: edge publishes
// envelopes, capture sees what would reach clients, dnc is the dispatcher's.
type harness struct {
	edge, dnc *nats.Conn
	capture   *natstest.Capture
}

func start(t *testing.T) *harness {
	t.Helper()
	srv := natstest.RunServer(t)
	h := &harness{edge: natstest.Connect(t, srv), dnc: natstest.Connect(t, srv)}
	h.capture = natstest.Subscribe(t, h.edge, "")
	d, err := dispatcher.New(h.dnc)
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

func (h *harness) send(t *testing.T, env wire.Envelope) {
	t.Helper()
	natstest.Publish(t, h.edge, "", env)
}

// envelope is natstest.Envelope with raw JSON details and a chosen user.
func envelope(action, user, details string) wire.Envelope {
	env := natstest.Envelope(action, nil)
	env.User = user
	env.Details = json.RawMessage(details)
	return env
}

func wantError(t *testing.T, r natstest.Received, subject, action string, code int, msg string) {
	t.Helper()
	if r.Subject != subject || r.Outbound.Action != action {
		t.Fatalf("got %s on %s, want %s on %s", r.Data, r.Subject, action, subject)
	}
	if e := natstest.ErrorDetails(t, r); e.Code != code || (msg != "" && e.Message != msg) {
		t.Fatalf("details %+v, want [%d, %q]", e, code, msg)
	}
}

func TestHelloSendsTruthyDetailsToEveryTabOfTheUser(t *testing.T) {
	h := start(t)
	for _, details := range []string{`"hi"`, `"0.0"`, `" "`, `1`, `-0.5`, `true`, `[0]`, `{"a":null}`, `"false"`} {
		t.Run(details, func(t *testing.T) {
			h.send(t, envelope("hello", "alice", details))
			r := h.capture.Next(t)
			if r.Subject != "ws.send.user.alice" || r.Outbound.Action != "hello" || string(r.Outbound.Details) != details {
				t.Fatalf("got %s on %s, want hello %s on ws.send.user.alice", r.Data, r.Subject, details)
			}
		})
	}
}

func TestHelloRefusesEmptyDetails(t *testing.T) {
	h := start(t)
	for _, details := range []string{`null`, `""`, `"0"`, `false`, `0`, `0.0`, `[]`, `{}`} {
		t.Run(details, func(t *testing.T) {
			h.send(t, envelope("hello", "alice", details))
			wantError(t, h.capture.Next(t), "ws.send.user.alice", "hello:error", 400, "No hello message:(")
		})
	}
}

func TestHelloAnswersAnonymousConnectionItself(t *testing.T) {
	h := start(t)
	env := envelope("hello", "", `"hi"`)
	h.send(t, env)
	r := h.capture.Next(t)
	if r.Subject != "ws.send.conn."+natstest.Connection || r.Outbound.Action != "hello" || string(r.Outbound.Ref) != string(env.Ref) {
		t.Fatalf("got %s on %s, want hello with ref on the connection", r.Data, r.Subject)
	}
	h.send(t, envelope("hello", "", `""`))
	wantError(t, h.capture.Next(t), "ws.send.conn."+natstest.Connection, "hello:error", 400, "No hello message:(")
}

func TestEchoRepliesSameDetailsAndRef(t *testing.T) {
	h := start(t)
	env := envelope("echo", "alice", `{"deep":[1,"two",{"three":3}]}`)
	env.Ref = json.RawMessage(`"req-1"`)
	h.send(t, env)
	r := h.capture.Next(t)
	if r.Subject != "ws.send.conn."+natstest.Connection || r.Outbound.Action != "echo" ||
		string(r.Outbound.Details) != string(env.Details) || string(r.Outbound.Ref) != `"req-1"` {
		t.Fatalf("got %s on %s", r.Data, r.Subject)
	}
}

func TestChatSendBroadcastsToAll(t *testing.T) {
	h := start(t)
	h.send(t, envelope("chat/send", "alice", `{"text":"  hello room  "}`))
	r := h.capture.Next(t)
	if r.Subject != "ws.send.all" || r.Outbound.Action != "chat/message" {
		t.Fatalf("got %s on %s", r.Data, r.Subject)
	}
	var msg struct{ From, Text, TS string }
	if err := json.Unmarshal(r.Outbound.Details, &msg); err != nil {
		t.Fatal(err)
	}
	if msg.From != "alice" || msg.Text != "hello room" {
		t.Fatalf("details %s", r.Outbound.Details)
	}
	if _, err := time.Parse(time.RFC3339, msg.TS); err != nil {
		t.Fatalf("ts %q: %v", msg.TS, err)
	}
}

func TestChatSendRefusesBadText(t *testing.T) {
	h := start(t)
	tests := []struct{ name, details, reason string }{
		{"no details", `null`, "text is empty"},
		{"blank", `{"text":" \n\t "}`, "text is empty"},
		{"too long", `{"text":"` + strings.Repeat("é", handlers.MaxChatText+1) + `"}`, "text is longer than 2000 characters"},
		{"not an object", `"hi"`, `details must be {"text": "<message>"}`},
		{"text not a string", `{"text":5}`, `details must be {"text": "<message>"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.send(t, envelope("chat/send", "alice", tt.details))
			wantError(t, h.capture.Next(t), "ws.send.conn."+natstest.Connection, "chat/send:error", 400, tt.reason)
		})
	}
	// Exactly MaxChatText characters is fine.
	h.send(t, envelope("chat/send", "alice", `{"text":"`+strings.Repeat("é", handlers.MaxChatText)+`"}`))
	if r := h.capture.Next(t); r.Outbound.Action != "chat/message" {
		t.Fatalf("got %s", r.Data)
	}
}

func TestChatPrivateReachesRecipientAndSender(t *testing.T) {
	h := start(t)
	h.send(t, envelope("chat/private", "alice", `{"to":"bob","text":"psst"}`))
	for _, subject := range []string{"ws.send.user.bob", "ws.send.user.alice"} {
		r := h.capture.Next(t)
		if r.Subject != subject || r.Outbound.Action != "chat/private" {
			t.Fatalf("got %s on %s, want chat/private on %s", r.Data, r.Subject, subject)
		}
		var msg struct{ From, To, Text, TS string }
		if err := json.Unmarshal(r.Outbound.Details, &msg); err != nil {
			t.Fatal(err)
		}
		if msg.From != "alice" || msg.To != "bob" || msg.Text != "psst" || msg.TS == "" {
			t.Fatalf("details %s", r.Outbound.Details)
		}
	}
	// To oneself: one message, not two.
	h.send(t, envelope("chat/private", "alice", `{"to":"alice","text":"note"}`))
	if r := h.capture.Next(t); r.Subject != "ws.send.user.alice" {
		t.Fatalf("got %s on %s", r.Data, r.Subject)
	}
	h.capture.Quiet(t, h.dnc)
}

func TestChatPrivateRefusesBadRecipientAndAnonymous(t *testing.T) {
	h := start(t)
	tests := []struct {
		name, user, details string
		code                int
	}{
		{"anonymous sender", "", `{"to":"bob","text":"hi"}`, 401},
		{"to with dot", "alice", `{"to":"bob.x","text":"hi"}`, 400},
		{"to wildcard", "alice", `{"to":">","text":"hi"}`, 400},
		{"to missing", "alice", `{"text":"hi"}`, 400},
		{"empty text", "alice", `{"to":"bob","text":""}`, 400},
		{"not an object", "alice", `[1]`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h.send(t, envelope("chat/private", tt.user, tt.details))
			wantError(t, h.capture.Next(t), "ws.send.conn."+natstest.Connection, "chat/private:error", tt.code, "")
		})
	}
	h.capture.Quiet(t, h.dnc)
}
