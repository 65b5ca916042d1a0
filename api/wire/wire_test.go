package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

func TestValidateID_OnlySubjectSafeTokens(t *testing.T) {
	for _, ok := range []string{"42", "alice@example", "a+b=c~d:e_f-g", strings.Repeat("x", 128)} {
		if err := wire.ValidateID(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a*", ">", "a b", "a\tb", "a\x00", "ü", "a/b", strings.Repeat("x", 129)} {
		if err := wire.ValidateID(bad); !errors.Is(err, wire.ErrBadID) {
			t.Errorf("%q accepted (err %v)", bad, err)
		}
	}
}

func TestParseClientFrame(t *testing.T) {
	cases := []struct {
		name, in         string
		action, details  string
		ref              string
		wantErrSubstring string
	}{
		{name: "action only", in: `["hello"]`, action: "hello", details: "null"},
		{name: "details", in: `["hello","Hello, world!"]`, action: "hello", details: `"Hello, world!"`},
		{name: "string ref", in: `["a/b:c",{"x":1},"r1"]`, action: "a/b:c", details: `{"x":1}`, ref: `"r1"`},
		{name: "integer ref", in: `["a",null,-7]`, action: "a", details: "null", ref: "-7"},
		{name: "not an array", in: `"x"`, wantErrSubstring: "not a JSON array"},
		{name: "bad action", in: `["a.b",1]`, wantErrSubstring: "invalid action"},
		{name: "bool ref", in: `["a",1,true]`, wantErrSubstring: "ref must be"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := wire.ParseClientFrame([]byte(tc.in))
			if tc.wantErrSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) || !errors.Is(err, wire.ErrBadFrame) {
					t.Fatalf("err %v, want %q", err, tc.wantErrSubstring)
				}
				return
			}
			if err != nil || f.Action != tc.action || string(f.Details) != tc.details || string(f.Ref) != tc.ref {
				t.Fatalf("got %+v %v", f, err)
			}
		})
	}
}

func TestProducedMessagesMatchTheSchemas(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	env, _ := json.Marshal(wire.Envelope{
		Action: "hello", Details: json.RawMessage(`"hi"`), Ref: json.RawMessage(`3`),
		User: "42", Groups: []string{"g"}, Language: "en", Connection: "edge-1.abc-1",
		Edge: "edge-1", IP: "127.0.0.1", TS: time.Now().UTC(),
	})
	out, _ := json.Marshal(wire.Outbound{Action: "hello", Details: json.RawMessage(`1`), Filter: &wire.Filter{Property: "language", Value: "de"}})
	req, _ := json.Marshal(wire.CalloutRequest{Edge: "e", RemoteAddr: "127.0.0.1:5", Cookies: map[string]string{"sid": "x"}})
	resp, _ := json.Marshal(wire.CalloutResponse{User: "42", Expires: 1700000000, Props: map[string]string{"plan": "pro"}})
	refusal, _ := json.Marshal(wire.CalloutResponse{Error: &wire.CalloutError{Code: 401, Message: "unknown session"}})
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		schema string
		data   []byte
	}{
		{schemacheck.Envelope, env},
		{schemacheck.Outbound, out},
		{schemacheck.CalloutRequest, req},
		{schemacheck.CalloutResponse, resp},
		{schemacheck.CalloutResponse, refusal},
		{schemacheck.ServerFrame, wire.AppendServerFrame(nil, "hello", json.RawMessage(`"x"`), json.RawMessage(`"r"`))},
		{schemacheck.ServerFrame, wire.ErrorFrame("hello:error", 400, "No hello message:(")},
		{schemacheck.ServerFrame, wire.ErrorFrame(wire.ErrorAction(long), 500, "Internal Server Error")},
		{schemacheck.ClientFrame, []byte(`["hello","Hello, world!",1]`)},
	} {
		if err := check.Check(tc.schema, tc.data); err != nil {
			t.Errorf("%s: %v", tc.data, err)
		}
	}
	// And the schemas refuse what the Go code refuses.
	for _, tc := range []struct{ schema, data string }{
		{schemacheck.ClientFrame, `["a.b",1]`},
		{schemacheck.ServerFrame, `["x:error","not [code, message]"]`},
		{schemacheck.Outbound, `{"action":"x","extra":1}`},
		{schemacheck.CalloutResponse, `{}`},
	} {
		if err := check.Check(tc.schema, []byte(tc.data)); err == nil {
			t.Errorf("%s accepted by %s", tc.data, tc.schema)
		}
	}
}

func TestErrorDetailsRoundTrip(t *testing.T) {
	data, _ := json.Marshal(wire.Error{Code: 400, Message: "No hello message:("})
	if string(data) != `[400,"No hello message:("]` {
		t.Fatalf("got %s", data)
	}
	var e wire.Error
	if err := json.Unmarshal(data, &e); err != nil || e.Code != 400 {
		t.Fatalf("got %+v %v", e, err)
	}
}

func TestSubjects(t *testing.T) {
	s := wire.NewSubjects("")
	for got, want := range map[string]string{
		s.In("chat/send"):                 "ws.in.chat/send",
		s.SendUser("42"):                  "ws.send.user.42",
		s.SendConn("e1.c1"):               "ws.send.conn.e1.c1",
		s.CloseSession("s"):               "ws.ctl.close.session.s",
		wire.NewSubjects("app").SendAll(): "app.send.all",
		s.Deliver("workers", "chat/send"): "_WSGATE.ws.workers.chat/send",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}
