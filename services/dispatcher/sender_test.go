package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
)

// senderHarness is a Sender on one connection and a capture on another.
func senderHarness(t *testing.T) (*dispatcher.Sender, *natstest.Capture, func(t *testing.T)) {
	t.Helper()
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	capture := natstest.Subscribe(t, natstest.Connect(t, srv), "")
	return dispatcher.NewSender(nc, ""), capture, func(t *testing.T) { capture.Quiet(t, nc) }
}

func TestSenderPublishesOnTheRightSubject(t *testing.T) {
	s, capture, quiet := senderHarness(t)
	details := map[string]string{"k": "v"}
	tests := []struct {
		name     string
		send     func(ctx context.Context) error
		subjects []string
		filter   *wire.Filter
		ref      string
		control  bool // a close command: empty payload
	}{
		{"ToUser", func(ctx context.Context) error { return s.ToUser(ctx, "u1", "act", details) },
			[]string{"ws.send.user.u1"}, nil, "", false},
		{"ToUsers", func(ctx context.Context) error { return s.ToUsers(ctx, []string{"u1", "u2@x"}, "act", details) },
			[]string{"ws.send.user.u1", "ws.send.user.u2@x"}, nil, "", false},
		{"ToGroup", func(ctx context.Context) error { return s.ToGroup(ctx, "admins", "act", details) },
			[]string{"ws.send.group.admins"}, nil, "", false},
		{"ToSession", func(ctx context.Context) error { return s.ToSession(ctx, "s-1", "act", details) },
			[]string{"ws.send.session.s-1"}, nil, "", false},
		{"ToConnection", func(ctx context.Context) error {
			return s.ToConnection(ctx, "edge-a.c9", "act", details, json.RawMessage(`"r1"`))
		}, []string{"ws.send.conn.edge-a.c9"}, nil, `"r1"`, false},
		{"ToAll", func(ctx context.Context) error { return s.ToAll(ctx, "act", details) },
			[]string{"ws.send.all"}, nil, "", false},
		{"ToRegistered", func(ctx context.Context) error { return s.ToRegistered(ctx, "act", details) },
			[]string{"ws.send.users"}, nil, "", false},
		{"ToFilter", func(ctx context.Context) error {
			return s.ToFilter(ctx, wire.Filter{Property: "language", Value: "uk"}, "act", details)
		}, []string{"ws.send.filter"}, &wire.Filter{Property: "language", Value: "uk"}, "", false},
		{"CloseUser", func(ctx context.Context) error { return s.CloseUser(ctx, "u1") },
			[]string{"ws.ctl.close.user.u1"}, nil, "", true},
		{"CloseSession", func(ctx context.Context) error { return s.CloseSession(ctx, "s-1") },
			[]string{"ws.ctl.close.session.s-1"}, nil, "", true},
		{"CloseConnection", func(ctx context.Context) error { return s.CloseConnection(ctx, "edge-a.c9") },
			[]string{"ws.ctl.close.conn.edge-a.c9"}, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(t.Context()); err != nil {
				t.Fatalf("send: %v", err)
			}
			for _, subject := range tt.subjects {
				r := capture.Next(t)
				if r.Subject != subject {
					t.Fatalf("published on %s, want %s", r.Subject, subject)
				}
				if tt.control {
					if len(r.Data) != 0 {
						t.Fatalf("close command payload %q, want empty", r.Data)
					}
					continue
				}
				if r.Outbound.Action != "act" || string(r.Outbound.Details) != `{"k":"v"}` || string(r.Outbound.Ref) != tt.ref {
					t.Fatalf("payload %s", r.Data)
				}
				if (r.Outbound.Filter == nil) != (tt.filter == nil) || (tt.filter != nil && *r.Outbound.Filter != *tt.filter) {
					t.Fatalf("filter %+v, want %+v", r.Outbound.Filter, tt.filter)
				}
			}
			quiet(t)
		})
	}
}

func TestSenderRefusesBadIDsBeforePublishing(t *testing.T) {
	s, _, quiet := senderHarness(t)
	badIDs := []string{"a.b", "*", ">", "a b", "", strings.Repeat("u", 129)}
	idMethods := []struct {
		name string
		send func(ctx context.Context, id string) error
	}{
		{"ToUser", func(ctx context.Context, id string) error { return s.ToUser(ctx, id, "act", 1) }},
		{"ToUsers", func(ctx context.Context, id string) error { return s.ToUsers(ctx, []string{"ok", id}, "act", 1) }},
		{"ToGroup", func(ctx context.Context, id string) error { return s.ToGroup(ctx, id, "act", 1) }},
		{"ToSession", func(ctx context.Context, id string) error { return s.ToSession(ctx, id, "act", 1) }},
		{"CloseUser", func(ctx context.Context, id string) error { return s.CloseUser(ctx, id) }},
		{"CloseSession", func(ctx context.Context, id string) error { return s.CloseSession(ctx, id) }},
		// A connection is "<edge>.<conn>": the bad id is each part in turn.
		{"ToConnection edge", func(ctx context.Context, id string) error { return s.ToConnection(ctx, id+".c1", "act", 1, nil) }},
		{"ToConnection conn", func(ctx context.Context, id string) error { return s.ToConnection(ctx, "e1."+id, "act", 1, nil) }},
		{"CloseConnection edge", func(ctx context.Context, id string) error { return s.CloseConnection(ctx, id+".c1") }},
		{"CloseConnection conn", func(ctx context.Context, id string) error { return s.CloseConnection(ctx, "e1."+id) }},
	}
	for _, m := range idMethods {
		t.Run(m.name, func(t *testing.T) {
			for _, id := range badIDs {
				if err := m.send(t.Context(), id); !errors.Is(err, dispatcher.ErrInvalidID) {
					t.Errorf("id %.20q: got %v, want ErrInvalidID", id, err)
				}
			}
			quiet(t)
		})
	}
	for _, conn := range []string{"nodot", "", "."} {
		if err := s.ToConnection(t.Context(), conn, "act", 1, nil); !errors.Is(err, dispatcher.ErrInvalidID) {
			t.Errorf("connection %q: got %v, want ErrInvalidID", conn, err)
		}
	}
	quiet(t)
}

func TestSenderRefusesBadActionsRefsAndFilters(t *testing.T) {
	s, _, quiet := senderHarness(t)
	long := strings.Repeat("a", 128)
	tests := []struct {
		name string
		send func(ctx context.Context) error
		want error
	}{
		{"action with dot", func(ctx context.Context) error { return s.ToAll(ctx, "a.b", nil) }, dispatcher.ErrInvalidAction},
		{"error response without [code, message]", func(ctx context.Context) error { return s.ToAll(ctx, "a:error", "oops") }, dispatcher.ErrInvalidErrorDetails},
		{"error response with a code that is no error status", func(ctx context.Context) error {
			return s.ToUser(ctx, "u1", "a:error", []any{200, "fine"})
		}, dispatcher.ErrInvalidErrorDetails},
		{"empty action", func(ctx context.Context) error { return s.ToUser(ctx, "u1", "", nil) }, dispatcher.ErrInvalidAction},
		{"action too long", func(ctx context.Context) error { return s.ToAll(ctx, long+"a", nil) }, dispatcher.ErrInvalidAction},
		{"ref too long", func(ctx context.Context) error {
			return s.ToConnection(ctx, "e1.c1", "act", nil, json.RawMessage(`"`+strings.Repeat("r", 65)+`"`))
		}, dispatcher.ErrInvalidRef},
		{"ref object", func(ctx context.Context) error {
			return s.ToConnection(ctx, "e1.c1", "act", nil, json.RawMessage(`{}`))
		}, dispatcher.ErrInvalidRef},
		{"filter without property", func(ctx context.Context) error {
			return s.ToFilter(ctx, wire.Filter{Value: "x"}, "act", nil)
		}, dispatcher.ErrInvalidFilter},
		{"unencodable details", func(ctx context.Context) error { return s.ToAll(ctx, "act", make(chan int)) }, dispatcher.ErrEncode},
		{"invalid raw details", func(ctx context.Context) error { return s.ToAll(ctx, "act", json.RawMessage(`{`)) }, dispatcher.ErrEncode},
		{"done context", func(context.Context) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return s.ToAll(ctx, "act", nil)
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(t.Context()); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			quiet(t)
		})
	}
}

func TestSenderEncodesDetails(t *testing.T) {
	s, capture, _ := senderHarness(t)
	long := strings.Repeat("a", 128)
	tests := []struct {
		name        string
		action      string
		details     any
		wantDetails string
	}{
		{"raw JSON as is", "act", json.RawMessage(`{"pre":"encoded"}`), `{"pre":"encoded"}`},
		{"nil is absent", "act", nil, ""},
		{"struct", "act", struct {
			A int `json:"a"`
		}{1}, `{"a":1}`},
		{"error of a 128-character action", long + wire.ErrorSuffix, wire.Error{Code: 400, Message: "no"}, `[400,"no"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.ToAll(t.Context(), tt.action, tt.details); err != nil {
				t.Fatal(err)
			}
			r := capture.Next(t)
			if r.Outbound.Action != tt.action || string(r.Outbound.Details) != tt.wantDetails {
				t.Fatalf("payload %s, want details %s", r.Data, tt.wantDetails)
			}
		})
	}
}
