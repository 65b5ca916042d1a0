package sendapi_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/internal/sendapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const key = "test-key-0123456789abcdef"

// harness is the API on a real HTTP server, publishing on a real NATS that
// capture watches.
type harness struct {
	srv     *server.Server
	nc      *nats.Conn // the API's connection
	edge    *nats.Conn // the capture's
	capture *natstest.Capture
	url     string
}

func start(t *testing.T, maxBody int64) *harness {
	t.Helper()
	h := &harness{srv: natstest.RunServer(t)}
	h.nc = natstest.Connect(t, h.srv)
	h.edge = natstest.Connect(t, h.srv)
	h.capture = natstest.Subscribe(t, h.edge, "")
	api, err := sendapi.New(sendapi.Config{
		Keys:      []string{"another-key-that-is-long", key},
		MaxBody:   maxBody,
		Sender:    dispatcher.NewSender(h.nc, ""),
		Connected: h.nc.IsConnected,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	api.Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	h.url = ts.URL
	return h
}

// call makes a request with the key (unless auth says otherwise) and returns
// the status, the decoded JSON body and the response.
func call(t *testing.T, method, url, auth, body string) (int, map[string]string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %s", method, url, ct, data)
	}
	var v map[string]string
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s %s: body %s: %v", method, url, data, err)
	}
	return resp.StatusCode, v, resp
}

func (h *harness) post(t *testing.T, path, body string) (int, map[string]string) {
	t.Helper()
	code, v, _ := call(t, http.MethodPost, h.url+path, "Bearer "+key, body)
	return code, v
}

func TestSendAndCloseReachEveryTarget(t *testing.T) {
	h := start(t, 0)
	tests := []struct {
		name, path, body string
		subjects         []string
		action, details  string
		ref, filter      string
	}{
		{name: "all", path: sendapi.PathSend, body: `{"target":"all","action":"news","details":{"n":1}}`,
			subjects: []string{"ws.send.all"}, action: "news", details: `{"n":1}`},
		{name: "users", path: sendapi.PathSend, body: `{"target":"users","action":"news"}`,
			subjects: []string{"ws.send.users"}, action: "news"},
		{name: "user", path: sendapi.PathSend, body: `{"target":"user","id":"42","action":"hello","details":"hi"}`,
			subjects: []string{"ws.send.user.42"}, action: "hello", details: `"hi"`},
		{name: "user with an integer id", path: sendapi.PathSend, body: `{"target":"user","id":42,"action":"hello"}`,
			subjects: []string{"ws.send.user.42"}, action: "hello"},
		{name: "users by ids, repeats once", path: sendapi.PathSend, body: `{"target":"user","ids":["1",2,"1","u@x"],"action":"hello","details":null}`,
			subjects: []string{"ws.send.user.1", "ws.send.user.2", "ws.send.user.u@x"}, action: "hello", details: "null"},
		{name: "group", path: sendapi.PathSend, body: `{"target":"group","id":"admins","action":"alert","details":[1,2]}`,
			subjects: []string{"ws.send.group.admins"}, action: "alert", details: "[1,2]"},
		{name: "session", path: sendapi.PathSend, body: `{"target":"session","id":"s-1","action":"x"}`,
			subjects: []string{"ws.send.session.s-1"}, action: "x"},
		{name: "conn with ref", path: sendapi.PathSend, body: `{"target":"conn","id":"e1.c1","action":"order:error","details":[409,"taken"],"ref":"r-7"}`,
			subjects: []string{"ws.send.conn.e1.c1"}, action: "order:error", details: `[409,"taken"]`, ref: `"r-7"`},
		{name: "filter", path: sendapi.PathSend, body: `{"target":"filter","filter":{"property":"language","value":"de"},"action":"hallo"}`,
			subjects: []string{"ws.send.filter"}, action: "hallo", filter: "language=de"},
		{name: "close user", path: sendapi.PathClose, body: `{"target":"user","id":"42"}`,
			subjects: []string{"ws.ctl.close.user.42"}},
		{name: "close session", path: sendapi.PathClose, body: `{"target":"session","id":"s-1"}`,
			subjects: []string{"ws.ctl.close.session.s-1"}},
		{name: "close conn", path: sendapi.PathClose, body: `{"target":"conn","id":"e1.c1"}`,
			subjects: []string{"ws.ctl.close.conn.e1.c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, v := h.post(t, tt.path, tt.body)
			if code != http.StatusAccepted || v["status"] != "accepted" {
				t.Fatalf("got %d %v, want 202 accepted", code, v)
			}
			for _, subject := range tt.subjects {
				r := h.capture.Next(t) // checks the payload against outbound.json
				if r.Subject != subject {
					t.Fatalf("subject %s, want %s", r.Subject, subject)
				}
				if tt.path == sendapi.PathClose {
					continue
				}
				if r.Outbound.Action != tt.action || string(r.Outbound.Details) != tt.details || string(r.Outbound.Ref) != tt.ref {
					t.Fatalf("got %s, want action %s details %s ref %s", r.Data, tt.action, tt.details, tt.ref)
				}
				var filter string
				if f := r.Outbound.Filter; f != nil {
					filter = f.Property + "=" + f.Value
				}
				if filter != tt.filter {
					t.Fatalf("filter %q, want %q", filter, tt.filter)
				}
			}
			h.capture.Quiet(t, h.nc)
		})
	}
}

func TestBadRequestsGetTheirReason(t *testing.T) {
	h := start(t, 0)
	long := strings.Repeat("x", 129)
	manyIDs := `[` + strings.Repeat(`"u",`, sendapi.MaxIDs) + `"u"]`
	tests := []struct {
		name, path, body string
		want             string // the exact error
	}{
		{"empty body", sendapi.PathSend, ``, "body is empty: want a JSON object"},
		{"not JSON", sendapi.PathSend, `target=all`, "body is not valid JSON: invalid character 'a' in literal true (expecting 'r') (at byte 2)"},
		{"truncated JSON", sendapi.PathSend, `{"target":"all"`, "body is not valid JSON: it ends too early"},
		{"array body", sendapi.PathSend, `[1]`, "body must be a JSON object"},
		{"two objects", sendapi.PathSend, `{"target":"all","action":"a"} {}`, "body has data after its JSON object"},
		{"unknown field", sendapi.PathSend, `{"target":"all","action":"a","detail":1}`, `body has an unknown field "detail"`},
		{"unknown filter field", sendapi.PathSend, `{"target":"filter","filter":{"property":"ip","value":"x","op":"="},"action":"a"}`, `body has an unknown field "op"`},
		{"target not a string", sendapi.PathSend, `{"target":1,"action":"a"}`, `"target" must be a string`},
		{"id a float", sendapi.PathSend, `{"target":"user","id":4.5,"action":"a"}`, `"id" must be a string or an integer`},
		{"ids not an array", sendapi.PathSend, `{"target":"user","ids":"1","action":"a"}`, `"ids" must be an array`},
		{"no target", sendapi.PathSend, `{"action":"a"}`, `"target" is required: one of all, users, user, group, session, conn, filter`},
		{"unknown target", sendapi.PathSend, `{"target":"everyone","action":"a"}`, `unknown target "everyone": want one of all, users, user, group, session, conn, filter`},
		{"user without id", sendapi.PathSend, `{"target":"user","action":"a"}`, `target "user" needs "id" (or "ids")`},
		{"group without id", sendapi.PathSend, `{"target":"group","action":"a"}`, `target "group" needs "id"`},
		{"session without id", sendapi.PathSend, `{"target":"session","action":"a"}`, `target "session" needs "id"`},
		{"conn without id", sendapi.PathSend, `{"target":"conn","action":"a"}`, `target "conn" needs "id": the envelope's "connection", "<edge>.<conn>"`},
		{"reserved action", sendapi.PathSend, `{"target":"all","action":"Server/close"}`, `"action" is invalid: "Server/close" is reserved: only the edge sends Client/ and Server/ actions`},
		{"error response without [code, message]", sendapi.PathSend, `{"target":"all","action":"x:error","details":"oops"}`, `"details" are invalid: "x:error" is an error response: its details must be [code, message] (an integer from 400 to 599 and a string): they are not an array`},
		{"id with a dot", sendapi.PathSend, `{"target":"user","id":"a.b","action":"a"}`, `"id" is invalid: character '.' at position 1 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"id with a star", sendapi.PathSend, `{"target":"group","id":"*","action":"a"}`, `"id" is invalid: character '*' at position 0 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"id with a chevron", sendapi.PathSend, `{"target":"session","id":">","action":"a"}`, `"id" is invalid: character '>' at position 0 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"id with a space", sendapi.PathSend, `{"target":"user","id":"a b","action":"a"}`, `"id" is invalid: character ' ' at position 1 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"id too long", sendapi.PathSend, `{"target":"user","id":"` + long + `","action":"a"}`, `"id" is invalid: longer than 128 characters`},
		{"conn id without a dot", sendapi.PathSend, `{"target":"conn","id":"e1","action":"a"}`, `"id" must be a connection "<edge>.<conn>", as the envelope's "connection" has it`},
		{"conn id with two dots", sendapi.PathSend, `{"target":"conn","id":"e1.c1.x","action":"a"}`, `"id" is invalid: its <conn> part: character '.' at position 2 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"id for all", sendapi.PathSend, `{"target":"all","id":"1","action":"a"}`, `target "all" takes no "id"`},
		{"id for users", sendapi.PathSend, `{"target":"users","id":"1","action":"a"}`, `target "users" takes no "id"`},
		{"ids for group", sendapi.PathSend, `{"target":"group","ids":["1"],"action":"a"}`, `"ids" is only for target "user"`},
		{"id and ids", sendapi.PathSend, `{"target":"user","id":"1","ids":["2"],"action":"a"}`, `give "id" or "ids", not both`},
		{"empty ids", sendapi.PathSend, `{"target":"user","ids":[],"action":"a"}`, `"ids" is empty`},
		{"bad id in ids", sendapi.PathSend, `{"target":"user","ids":["1","x>"],"action":"a"}`, `"ids[1]" is invalid: character '>' at position 1 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"too many ids", sendapi.PathSend, `{"target":"user","ids":` + manyIDs + `,"action":"a"}`, fmt.Sprintf(`"ids" has %d entries; at most %d`, sendapi.MaxIDs+1, sendapi.MaxIDs)},
		{"filter target without filter", sendapi.PathSend, `{"target":"filter","action":"a"}`, `target "filter" needs "filter": {"property": "...", "value": "..."}`},
		{"filter for user", sendapi.PathSend, `{"target":"user","id":"1","filter":{"property":"ip","value":"x"},"action":"a"}`, `"filter" is only for target "filter"`},
		{"filter without property", sendapi.PathSend, `{"target":"filter","filter":{"value":"x"},"action":"a"}`, `"filter.property" is required: language, ip, user_agent, origin or a props key`},
		{"filter without value", sendapi.PathSend, `{"target":"filter","filter":{"property":"ip"},"action":"a"}`, `"filter.value" is required`},
		{"no action", sendapi.PathSend, `{"target":"all"}`, `"action" is required`},
		{"action with a dot", sendapi.PathSend, `{"target":"all","action":"a.b"}`, `"action" is invalid: character '.' at position 1 is not one of A-Z a-z 0-9 _ - / :`},
		{"action too long", sendapi.PathSend, `{"target":"all","action":"` + long + `"}`, `"action" is invalid: longer than 128 characters`},
		{"ref for a user", sendapi.PathSend, `{"target":"user","id":"1","action":"a","ref":1}`, `"ref" is only for target "conn" (a reply to one connection)`},
		{"ref a bool", sendapi.PathSend, `{"target":"conn","id":"e.c","action":"a","ref":true}`, `"ref" is invalid: ref must be a string or an integer`},
		{"close all", sendapi.PathClose, `{"target":"all"}`, `target "all" cannot be closed: want one of user, session, conn`},
		{"close without target", sendapi.PathClose, `{"id":"1"}`, `"target" is required: one of user, session, conn`},
		{"close without id", sendapi.PathClose, `{"target":"user"}`, `target "user" needs "id"`},
		{"close with bad id", sendapi.PathClose, `{"target":"session","id":"a*"}`, `"id" is invalid: character '*' at position 1 is not one of A-Z a-z 0-9 _ - @ + = ~ :`},
		{"close with action", sendapi.PathClose, `{"target":"user","id":"1","action":"a"}`, `body has an unknown field "action"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, v := h.post(t, tt.path, tt.body)
			if code != http.StatusBadRequest || v["error"] != tt.want {
				t.Fatalf("got %d %q,\nwant 400 %q", code, v["error"], tt.want)
			}
		})
	}
	// Details may be absent or any JSON value.
	if code, v := h.post(t, sendapi.PathSend, `{"target":"all","action":"a"}`); code != http.StatusAccepted {
		t.Fatalf("absent details: %d %v", code, v)
	}
	if r := h.capture.Next(t); r.Subject != "ws.send.all" || r.Outbound.Details != nil {
		t.Fatalf("absent details sent as %s", r.Data)
	}
	h.capture.Quiet(t, h.nc) // nothing refused was published
}

func TestMethodsOtherThanPOSTGet405(t *testing.T) {
	h := start(t, 0)
	for _, path := range []string{sendapi.PathSend, sendapi.PathClose} {
		code, v, resp := call(t, http.MethodGet, h.url+path, "Bearer "+key, "")
		if code != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost || v["error"] != "method GET is not allowed: use POST" {
			t.Fatalf("GET %s: %d %v Allow %q", path, code, v, resp.Header.Get("Allow"))
		}
	}
}

func TestWithoutTheRightKeyIs401(t *testing.T) {
	h := start(t, 0)
	body := `{"target":"all","action":"a"}`
	tests := []struct{ name, auth, want, challenge string }{
		{"no header", "", `missing "Authorization: Bearer <key>"`, `Bearer realm="wsgate"`},
		{"basic auth", "Basic dXNlcjpwYXNz", `Authorization must be "Bearer <key>"`, `Bearer realm="wsgate", error="invalid_request"`},
		{"bearer without key", "Bearer ", `Authorization must be "Bearer <key>"`, `Bearer realm="wsgate", error="invalid_request"`},
		{"wrong key", "Bearer not-the-key-0123456789", "unknown bearer key", `Bearer realm="wsgate", error="invalid_token"`},
		{"key prefix", "Bearer " + key[:10], "unknown bearer key", `Bearer realm="wsgate", error="invalid_token"`},
		{"key plus more", "Bearer " + key + "x", "unknown bearer key", `Bearer realm="wsgate", error="invalid_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, path := range []string{sendapi.PathSend, sendapi.PathClose} {
				code, v, resp := call(t, http.MethodPost, h.url+path, tt.auth, body)
				if code != http.StatusUnauthorized || v["error"] != tt.want {
					t.Fatalf("%s: got %d %v, want 401 %q", path, code, v, tt.want)
				}
				if got := resp.Header.Get("WWW-Authenticate"); got != tt.challenge {
					t.Fatalf("%s: WWW-Authenticate %q, want %q", path, got, tt.challenge)
				}
			}
		})
	}
	// The scheme is case-insensitive, and any of the keys works.
	if code, v, _ := call(t, http.MethodPost, h.url+sendapi.PathSend, "bearer another-key-that-is-long", body); code != http.StatusAccepted {
		t.Fatalf("second key: %d %v", code, v)
	}
	if r := h.capture.Next(t); r.Outbound.Action != "a" {
		t.Fatalf("got %s", r.Data)
	}
	h.capture.Quiet(t, h.nc) // nothing unauthorized was published
}

func TestBodyOverTheLimitIs413(t *testing.T) {
	const limit = 256
	h := start(t, limit)
	pad := strings.Repeat("x", limit)
	code, v := h.post(t, sendapi.PathSend, `{"target":"all","action":"a","details":"`+pad+`"}`)
	if code != http.StatusRequestEntityTooLarge || v["error"] != "body is larger than 256 bytes" {
		t.Fatalf("got %d %v, want 413", code, v)
	}
	// Just under the limit is fine.
	body := `{"target":"all","action":"a","details":"` + pad[:limit-len(`{"target":"all","action":"a","details":""}`)] + `"}`
	if code, v := h.post(t, sendapi.PathSend, body); code != http.StatusAccepted {
		t.Fatalf("%d-byte body: %d %v", len(body), code, v)
	}
	h.capture.Next(t)
}

func TestNATSDownIs503(t *testing.T) {
	h := start(t, 0)
	h.srv.Shutdown()
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		code, v := h.post(t, sendapi.PathSend, `{"target":"user","id":"42","action":"a"}`)
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("got %d %v, want 503", code, v)
		}
		if v["error"] != "NATS is not connected; nothing was sent" {
			return fmt.Errorf("reason %q", v["error"])
		}
		return nil
	})
	// A bad request is still told apart from an outage.
	if code, v := h.post(t, sendapi.PathClose, `{"target":"all"}`); code != http.StatusBadRequest {
		t.Fatalf("bad request while NATS is down: %d %v", code, v)
	}
}
