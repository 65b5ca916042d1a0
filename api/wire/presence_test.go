package wire_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

func TestPresenceAnswersMatchTheSchemas(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	user, _ := json.Marshal(wire.PresenceUserAnswer{User: "42", Online: true, Connections: []wire.PresenceConnectionAnswer{
		{Connection: "edge-1.abc-1", Session: "s1", Since: now},
	}})
	offline, _ := json.Marshal(wire.PresenceUserAnswer{User: "42", Connections: []wire.PresenceConnectionAnswer{}})
	group, _ := json.Marshal(wire.PresenceGroupAnswer{Group: "room-5", Users: 2, Connections: 3, Members: []string{"41", "42"}})
	conn, _ := json.Marshal(wire.PresenceConn{User: "42", Groups: []string{"room-5"}, Language: "en",
		Connection: "edge-1.abc-1", Edge: "edge-1", Epoch: "x1", Since: now})
	for _, tc := range []struct {
		schema string
		data   []byte
	}{
		{schemacheck.PresenceUser, user},
		{schemacheck.PresenceUser, offline},
		{schemacheck.PresenceGroup, group},
		{schemacheck.PresenceError, wire.PresenceFailure(503, "presence is off")},
		{schemacheck.PresenceConn, conn},
	} {
		if err := check.Check(tc.schema, tc.data); err != nil {
			t.Errorf("%s: %v", tc.data, err)
		}
	}
	for _, tc := range []struct{ schema, data string }{
		{schemacheck.PresenceUser, `{"user":"42","online":true}`},
		{schemacheck.PresenceGroup, `{"group":"g","users":-1,"connections":0,"members":[]}`},
		{schemacheck.PresenceError, `{"error":{"code":200,"message":"x"}}`},
		{schemacheck.PresenceConn, `{"user":"42"}`},
	} {
		if err := check.Check(tc.schema, []byte(tc.data)); err == nil {
			t.Errorf("%s accepted by %s", tc.data, tc.schema)
		}
	}
}

func TestPresenceKeys(t *testing.T) {
	for got, want := range map[string]string{
		wire.PresenceUserKey("42"):                 "user.42",
		wire.PresenceUserKey("a@b+c~d:e=f"):        "user.a=40b=2Bc=7Ed=3Ae=3Df",
		wire.PresenceEdgeKey("edge-1"):             "edge.edge-1",
		wire.PresenceConnKey("edge:1", "x-1"):      "conn.edge=3A1.x-1",
		wire.NewSubjects("").PresenceUser("42"):    "ws.presence.user.42",
		wire.NewSubjects("").PresenceGroup("room"): "ws.presence.group.room",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	// Escaping is injective: an escaped '=' never reads as another character.
	if wire.PresenceKeyID("=40") == wire.PresenceKeyID("@") {
		t.Error("=40 and @ escape to the same key")
	}
}
