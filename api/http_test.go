package api_test

import (
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api/schemacheck"
)

// TestHTTPSchemas checks the schemas of the dispatcher's HTTP API (DESIGN.md
// §5, §9) against bodies and answers of services/dispatcher/internal/sendapi:
// the request bodies its tests send (accepted and refused) and the answers
// its handlers write.
func TestHTTPSchemas(t *testing.T) {
	ck, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 129)
	ids := make([]string, 1001)
	for i := range ids {
		ids[i] = `"u"`
	}
	manyIDs := "[" + strings.Join(ids, ",") + "]"

	valid := []struct{ schema, body string }{
		// POST /v1/send (sendapi api_test.go, history_test.go).
		{schemacheck.HTTPSend, `{"target":"all","action":"news","details":{"n":1}}`},
		{schemacheck.HTTPSend, `{"target":"users","action":"news"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"42","action":"hello","details":"hi"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":42,"action":"hello"}`},
		{schemacheck.HTTPSend, `{"target":"user","ids":["1",2,"1","u@x"],"action":"hello","details":null}`},
		{schemacheck.HTTPSend, `{"target":"group","id":"admins","action":"alert","details":[1,2]}`},
		{schemacheck.HTTPSend, `{"target":"session","id":"s-1","action":"x"}`},
		{schemacheck.HTTPSend, `{"target":"conn","id":"e1.c1","action":"order:error","details":[409,"taken"],"ref":"r-7"}`},
		{schemacheck.HTTPSend, `{"target":"filter","filter":{"property":"language","value":"de"},"action":"hallo"}`},
		{schemacheck.HTTPSend, `{"target":"user","ids":["1","2","2","3","4"],"action":"hello"}`},
		{schemacheck.HTTPSend, `{"target":"conn","id":"e.c","action":"hello"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"42","action":"hello","ref":null}`},
		// POST /v1/close.
		{schemacheck.HTTPClose, `{"target":"user","id":"42"}`},
		{schemacheck.HTTPClose, `{"target":"session","id":"s-1"}`},
		{schemacheck.HTTPClose, `{"target":"conn","id":"e1.c1"}`},
		// POST /v1/join and /v1/leave (sendapi rooms_test.go).
		{schemacheck.HTTPMembership, `{"target":"user","id":42,"groups":["room-5"]}`},
		{schemacheck.HTTPMembership, `{"target":"session","id":"s1","groups":["a","b"]}`},
		{schemacheck.HTTPMembership, `{"target":"conn","id":"e1.c1","groups":["a"]}`},
		// Answers (sendapi api.go, rooms.go).
		{schemacheck.HTTPAnswer, `{"status":"accepted"}`},
		{schemacheck.HTTPAnswer, `{"status":"accepted","seq":17}`},
		{schemacheck.HTTPAnswer, `{"status":"ok"}`},
		{schemacheck.HTTPAnswer, `{"error":"\"target\" is required: one of all, users, user, group, session, conn, filter"}`},
		{schemacheck.HTTPAnswer, `{"error":"unknown bearer key"}`},
		{schemacheck.HTTPAnswer, `{"error":"no such connection: e1.gone"}`},
		{schemacheck.HTTPAnswer, `{"error":"NATS refused the message; it may be partly sent (the first 2 of its 4 ids, in the request's order, were sent: retry only the others)"}`},
	}
	for _, tc := range valid {
		if err := ck.Check(tc.schema, []byte(tc.body)); err != nil {
			t.Errorf("%s refuses %s: %v", tc.schema, tc.body, err)
		}
	}

	// Bodies sendapi answers 400 (its api_test.go and rooms_test.go), and
	// answers it never writes.
	invalid := []struct{ schema, body string }{
		{schemacheck.HTTPSend, `{"target":"all","action":"a","detail":1}`},
		{schemacheck.HTTPSend, `{"target":"filter","filter":{"property":"ip","value":"x","op":"="},"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":1,"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":4.5,"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","ids":"1","action":"a"}`},
		{schemacheck.HTTPSend, `{"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"everyone","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"group","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"session","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"conn","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"all","action":"Server/close"}`},
		{schemacheck.HTTPSend, `{"target":"all","action":"Client/authentication"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"a.b","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"group","id":"*","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"session","id":">","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"a b","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"` + long + `","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"conn","id":"e1","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"conn","id":"e1.c1.x","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"all","id":"1","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"users","id":"1","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"group","ids":["1"],"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"1","ids":["2"],"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","ids":[],"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","ids":["1","x>"],"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","ids":` + manyIDs + `,"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"filter","action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"1","filter":{"property":"ip","value":"x"},"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"filter","filter":{"value":"x"},"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"filter","filter":{"property":"ip"},"action":"a"}`},
		{schemacheck.HTTPSend, `{"target":"all"}`},
		{schemacheck.HTTPSend, `{"target":"all","action":"a.b"}`},
		{schemacheck.HTTPSend, `{"target":"all","action":"` + long + `"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"1","action":"a","ref":1}`},
		{schemacheck.HTTPSend, `{"target":"conn","id":"e.c","action":"a","ref":true}`},
		// An error response carries [code, message] (DESIGN.md §2).
		{schemacheck.HTTPSend, `{"target":"conn","id":"e.c","action":"order:error","details":"taken"}`},
		{schemacheck.HTTPSend, `{"target":"user","id":"42","action":"order:error"}`},
		{schemacheck.HTTPClose, `{"target":"all"}`},
		{schemacheck.HTTPClose, `{"id":"1"}`},
		{schemacheck.HTTPClose, `{"target":"user"}`},
		{schemacheck.HTTPClose, `{"target":"session","id":"a*"}`},
		{schemacheck.HTTPClose, `{"target":"user","id":"1","action":"a"}`},
		{schemacheck.HTTPClose, `{"target":"user","id":"e1.c1"}`},
		{schemacheck.HTTPClose, `{"target":"conn","id":"42"}`},
		{schemacheck.HTTPMembership, `{"target":"user","id":"42"}`},
		{schemacheck.HTTPMembership, `{"target":"user","id":"42","groups":[]}`},
		{schemacheck.HTTPMembership, `{"target":"user","id":"42","groups":["a.b"]}`},
		{schemacheck.HTTPMembership, `{"target":"group","id":"42","groups":["a"]}`},
		{schemacheck.HTTPMembership, `{"target":"conn","id":"42","groups":["a"]}`},
		{schemacheck.HTTPMembership, `{"target":"user","id":"42","groups":"a"}`},
		{schemacheck.HTTPMembership, `{"target":"user","id":"42","groups":[5]}`},
		{schemacheck.HTTPAnswer, `{"status":"accepted","seq":0}`},
		{schemacheck.HTTPAnswer, `{"status":"ok","seq":1}`},
		{schemacheck.HTTPAnswer, `{"status":"done"}`},
		{schemacheck.HTTPAnswer, `{"error":{"code":400,"message":"x"}}`},
		{schemacheck.HTTPAnswer, `{"ok":true}`},
	}
	for _, tc := range invalid {
		if err := ck.Check(tc.schema, []byte(tc.body)); err == nil {
			t.Errorf("%s accepts %s", tc.schema, tc.body)
		}
	}
}

// TestPresenceGroupRequestSchema: the payloads a dispatcher accepts on
// <prefix>.presence.group.<group> (services/dispatcher/internal/presence:
// empty, null, or {"limit": n}, n ≥ 0, clamped to 10000) and those it
// answers 400.
func TestPresenceGroupRequestSchema(t *testing.T) {
	ck, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{`null`, `{}`, `{"limit":0}`, `{"limit":10}`, `{"limit":null}`, `{"limit":50000}`} {
		if err := ck.Check(schemacheck.PresenceGroupRequest, []byte(ok)); err != nil {
			t.Errorf("refuses %s: %v", ok, err)
		}
	}
	for _, bad := range []string{`{"limit":-1}`, `{"limit":"10"}`, `{"limit":1.5}`, `{"limit":1,"offset":2}`, `[]`, `"x"`, `5`} {
		if err := ck.Check(schemacheck.PresenceGroupRequest, []byte(bad)); err == nil {
			t.Errorf("accepts %s", bad)
		}
	}
}
