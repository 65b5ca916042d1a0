package sendapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/internal/sendapi"
)

// answerMemberships stands in for the edges: it records each join or leave
// request and answers with answer(subject).
func answerMemberships(t *testing.T, nc *nats.Conn, answer func(subject string) string) chan *nats.Msg {
	t.Helper()
	got := make(chan *nats.Msg, 16)
	for _, subj := range []string{"ws.ctl.join.>", "ws.ctl.leave.>"} {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			got <- m
			_ = m.Respond([]byte(answer(m.Subject)))
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestJoinAndLeave_ReachTheEdgesAndMapTheirAnswers: a valid body becomes a
// request on the target's ctl.join/leave subject with a payload of the
// join schema; the edges' answer becomes 200, or their code and message.
func TestJoinAndLeave_ReachTheEdgesAndMapTheirAnswers(t *testing.T) {
	h := start(t, 0)
	got := answerMemberships(t, h.edge, func(subject string) string {
		switch {
		case strings.HasSuffix(subject, ".gone"):
			return `{"error":{"code":404,"message":"no such connection: e1.gone"}}`
		case strings.HasSuffix(subject, ".slow"):
			return `{"error":{"code":503,"message":"not confirmed in time by edge e2"}}`
		}
		return `{"ok":true}`
	})
	for _, tc := range []struct {
		path, body, subject string
		code                int
		reply               string
	}{
		{sendapi.PathJoin, `{"target":"user","id":42,"groups":["room-5"]}`, "ws.ctl.join.user.42", 200, "ok"},
		{sendapi.PathLeave, `{"target":"session","id":"s1","groups":["a","b"]}`, "ws.ctl.leave.session.s1", 200, "ok"},
		{sendapi.PathJoin, `{"target":"conn","id":"e1.c1","groups":["a"]}`, "ws.ctl.join.conn.e1.c1", 200, "ok"},
		{sendapi.PathJoin, `{"target":"conn","id":"e1.gone","groups":["a"]}`, "ws.ctl.join.conn.e1.gone", 404, "no such connection: e1.gone"},
		{sendapi.PathJoin, `{"target":"user","id":"slow","groups":["a"]}`, "ws.ctl.join.user.slow", 503, "not confirmed in time by edge e2"},
	} {
		code, v := h.post(t, tc.path, tc.body)
		if code != tc.code || (v["status"] != tc.reply && v["error"] != tc.reply) {
			t.Errorf("%s %s: %d %v, want %d %q", tc.path, tc.body, code, v, tc.code, tc.reply)
			continue
		}
		select {
		case m := <-got:
			if m.Subject != tc.subject {
				t.Errorf("subject %s, want %s", m.Subject, tc.subject)
			}
			natstest.Check(t, schemacheck.Membership, m.Data)
		case <-time.After(natstest.Wait):
			t.Fatalf("%s: no request reached the edges", tc.body)
		}
	}
}

// TestJoin_BadBodiesAre400AndSendNothing.
func TestJoin_BadBodiesAre400AndSendNothing(t *testing.T) {
	h := start(t, 0)
	got := answerMemberships(t, h.edge, func(string) string { return `{"ok":true}` })
	for _, tc := range []struct{ body, reason string }{
		{`{"target":"user","id":"42"}`, `"groups" must list 1 to 100 groups`},
		{`{"target":"user","id":"42","groups":[]}`, `"groups" must list 1 to 100 groups`},
		{`{"target":"user","id":"42","groups":["a.b"]}`, `group "a.b"`},
		{`{"target":"group","id":"42","groups":["a"]}`, `cannot be closed`},
		{`{"target":"conn","id":"42","groups":["a"]}`, `<edge>.<conn>`},
		{`{"target":"user","id":"42","groups":"a"}`, `"groups" must be`},
	} {
		code, v := h.post(t, sendapi.PathJoin, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(v["error"], tc.reason) {
			t.Errorf("%s: %d %v, want 400 with %q", tc.body, code, v, tc.reason)
		}
	}
	select {
	case m := <-got:
		t.Fatalf("a bad body reached the edges: %s %s", m.Subject, m.Data)
	default:
	}
}

// TestJoin_NoEdgeIs503: nobody answers the request.
func TestJoin_NoEdgeIs503(t *testing.T) {
	h := start(t, 0)
	code, v := h.post(t, sendapi.PathJoin, `{"target":"user","id":"42","groups":["a"]}`)
	if code != http.StatusServiceUnavailable || v["error"] != "no edge confirmed the change; retry" {
		t.Fatalf("%d %v, want 503", code, v)
	}
	h.srv.Shutdown()
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if h.nc.IsConnected() {
			return errors.New("still connected")
		}
		return nil
	})
	code, v = h.post(t, sendapi.PathLeave, `{"target":"user","id":"42","groups":["a"]}`)
	if code != http.StatusServiceUnavailable || v["error"] != "NATS is not connected; nothing was changed" {
		t.Fatalf("%d %v, want 503", code, v)
	}
}

// The answer the edges give matches its schema.
func TestControlAnswerSchema(t *testing.T) {
	for _, a := range []wire.ControlAnswer{{OK: true}, {Error: &wire.ControlError{Code: 400, Message: "x"}}} {
		data, _ := json.Marshal(a)
		natstest.Check(t, schemacheck.ControlAnswer, data)
	}
}
