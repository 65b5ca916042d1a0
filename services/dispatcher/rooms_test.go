package dispatcher_test

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// TestSenderJoinAndLeave: Join and Leave request the target's subject with
// {"groups": [...]}, return nil on ok and the edges' refusal as a
// *MembershipError; bad targets and groups send nothing; no edge is
// ErrNotAnswered. (With real edges: services/edge/rooms_test.go and
// services/devstack/rooms_test.go.)
func TestSenderJoinAndLeave(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	s := dispatcher.NewSender(nc, "")
	ctx := context.Background()
	if err := s.Join(ctx, dispatcher.UserTarget("42"), "room"); !errors.Is(err, dispatcher.ErrNotAnswered) {
		t.Fatalf("no edge: %v, want ErrNotAnswered", err)
	}

	edge := natstest.Connect(t, srv)
	got := make(chan string, 16)
	sub, err := edge.Subscribe("ws.ctl.>", func(m *nats.Msg) {
		got <- m.Subject + " " + string(m.Data)
		if m.Subject == "ws.ctl.join.conn.e1.gone" {
			_ = m.Respond([]byte(`{"error":{"code":404,"message":"no such connection: e1.gone"}}`))
			return
		}
		_ = m.Respond([]byte(`{"ok":true}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := edge.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func() error
		want string
	}{
		{"join user", func() error { return s.Join(ctx, dispatcher.UserTarget("42"), "room-5", "lobby") },
			`ws.ctl.join.user.42 {"groups":["room-5","lobby"]}`},
		{"leave session", func() error { return s.Leave(ctx, dispatcher.SessionTarget("s@1"), "room-5") },
			`ws.ctl.leave.session.s@1 {"groups":["room-5"]}`},
		{"join conn", func() error { return s.Join(ctx, dispatcher.ConnectionTarget("e1.c1"), "room-5") },
			`ws.ctl.join.conn.e1.c1 {"groups":["room-5"]}`},
	} {
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if g := <-got; g != tc.want {
			t.Fatalf("%s: sent %s, want %s", tc.name, g, tc.want)
		}
	}
	err = s.Join(ctx, dispatcher.ConnectionTarget("e1.gone"), "room")
	var refused *dispatcher.MembershipError
	if !errors.As(err, &refused) || refused.Code != 404 {
		t.Fatalf("refusal: %v, want a 404 MembershipError", err)
	}
	<-got
	for name, err := range map[string]error{
		"no groups":     s.Join(ctx, dispatcher.UserTarget("42")),
		"bad group":     s.Join(ctx, dispatcher.UserTarget("42"), "a.b"),
		"bad user":      s.Leave(ctx, dispatcher.UserTarget("a*"), "g"),
		"bad conn":      s.Join(ctx, dispatcher.ConnectionTarget("c1"), "g"),
		"zero target":   s.Join(ctx, dispatcher.Target{}, "g"),
		"empty session": s.Join(ctx, dispatcher.SessionTarget(""), "g"),
	} {
		if !errors.Is(err, dispatcher.ErrInvalidID) {
			t.Errorf("%s: %v, want ErrInvalidID", name, err)
		}
	}
	if err := edge.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		t.Fatalf("a bad join was sent: %s", g)
	default:
	}
}
