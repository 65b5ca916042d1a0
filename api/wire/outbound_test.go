package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

// TestOutboundErrorDetails: an error response ("<action>:error") published
// for clients must carry [code, message] (DESIGN.md §2). DecodeOutbound, the
// edge's gate, refuses any other details, as ValidateOutboundDetails (the
// publishers' check) and the outbound schema do, so that no forwarded frame
// breaks the server-frame schema.
func TestOutboundErrorDetails(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("a", wire.MaxActionLen) + wire.ErrorSuffix
	for _, ok := range []string{
		`{"action":"x:error","details":[400,"bad"]}`,
		`{"action":"x:error","details":[ 599 , "" ],"ref":"r"}`,
		`{"action":"` + long + `","details":[500,"Internal Server Error"]}`,
		`{"action":"x:error","details":[409,"taken"],"filter":{"property":"language","value":"de"}}`,
		`{"action":"x","details":"any details"}`, // not an error response
		`{"action":"error","details":"str"}`,     // no ":error" suffix
		`{"action":"x:errors","details":1}`,
	} {
		m, err := wire.DecodeOutbound([]byte(ok))
		if err != nil {
			t.Errorf("DecodeOutbound(%s): %v", ok, err)
			continue
		}
		if err := wire.ValidateOutboundDetails(m.Action, m.Details); err != nil {
			t.Errorf("ValidateOutboundDetails(%s): %v", ok, err)
		}
		if err := check.Check(schemacheck.Outbound, []byte(ok)); err != nil {
			t.Errorf("schema refuses %s: %v", ok, err)
		}
		frame := wire.AppendServerFrame(nil, m.Action, m.Details, m.Ref)
		if err := check.Check(schemacheck.ServerFrame, frame); err != nil {
			t.Errorf("%s forwarded as %s: %v", ok, frame, err)
		}
	}
	for _, tc := range []struct {
		msg, reason string
		wireOnly    bool // JSON Schema counts 4e2 as the integer 400; wire wants plain integers
	}{
		{`{"action":"x:error","details":"str"}`, "not an array", false},
		{`{"action":"x:error"}`, "absent", false},
		{`{"action":"x:error","details":null}`, "absent", false},
		{`{"action":"x:error","details":{"code":400,"message":"m"}}`, "not an array", false},
		{`{"action":"x:error","details":[400]}`, "1 elements", false},
		{`{"action":"x:error","details":[400,"m",1]}`, "3 elements", false},
		{`{"action":"x:error","details":["400","m"]}`, "not an integer", false},
		{`{"action":"x:error","details":[400.5,"m"]}`, "not an integer", false},
		{`{"action":"x:error","details":[4e2,"m"]}`, "not an integer", true},
		{`{"action":"x:error","details":[200,"m"]}`, "not from 400 to 599", false},
		{`{"action":"x:error","details":[600,"m"]}`, "not from 400 to 599", false},
		{`{"action":"x:error","details":[400,null]}`, "message is not a string", false},
		{`{"action":"x:error","details":[400,["m"]]}`, "message is not a string", false},
		{`{"action":"` + long + `","details":"str"}`, "not an array", false},
	} {
		_, err := wire.DecodeOutbound([]byte(tc.msg))
		if !errors.Is(err, wire.ErrBadOutbound) || !errors.Is(err, wire.ErrBadErrorDetails) ||
			!strings.Contains(err.Error(), "must be [code, message]") || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("DecodeOutbound(%s) = %v, want a refusal saying %q", tc.msg, err, tc.reason)
		}
		var m wire.Outbound
		if err := json.Unmarshal([]byte(tc.msg), &m); err != nil {
			t.Fatal(err)
		}
		if err := wire.ValidateOutboundDetails(m.Action, m.Details); !errors.Is(err, wire.ErrBadErrorDetails) {
			t.Errorf("ValidateOutboundDetails(%s) = %v", tc.msg, err)
		}
		if err := check.Check(schemacheck.Outbound, []byte(tc.msg)); err == nil && !tc.wireOnly {
			t.Errorf("outbound schema accepts %s", tc.msg)
		}
	}
}

// TestOutboundReservedActions: a publisher cannot send the edge's own
// actions; DecodeOutbound and the outbound schema refuse them alike, while
// the server-frame schema keeps them (the edge sends them).
func TestOutboundReservedActions(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{"Server/close", "Server/recovery", "Server/ack:error", "Client/authentication", "Client/error", "Client/x"} {
		msg := `{"action":"` + action + `","details":[400,"m"]}`
		if _, err := wire.DecodeOutbound([]byte(msg)); !errors.Is(err, wire.ErrBadAction) {
			t.Errorf("DecodeOutbound(%s) = %v, want a reserved-action refusal", msg, err)
		}
		if err := check.Check(schemacheck.Outbound, []byte(msg)); err == nil {
			t.Errorf("outbound schema accepts %s", msg)
		}
		if err := check.Check(schemacheck.ServerFrame, []byte(`["`+action+`",[400,"m"]]`)); err != nil {
			t.Errorf("server-frame schema refuses %s: %v", action, err)
		}
	}
	// Only the prefixes are reserved.
	for _, action := range []string{"client/x", "Servers/x", "x/Server/close"} {
		msg := `{"action":"` + action + `"}`
		if _, err := wire.DecodeOutbound([]byte(msg)); err != nil {
			t.Errorf("DecodeOutbound(%s): %v", msg, err)
		}
		if err := check.Check(schemacheck.Outbound, []byte(msg)); err != nil {
			t.Errorf("outbound schema refuses %s: %v", msg, err)
		}
	}
}
