package wire_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

// TestDecodeMembership: what the edge accepts as a join or leave payload,
// and that the schema agrees with it both ways.
func TestDecodeMembership(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	many := `{"groups":["g"` + strings.Repeat(`,"g"`, wire.MaxMembershipGroups) + `]}`
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "one", in: `{"groups":["room-5"]}`, want: "room-5"},
		{name: "duplicates dropped", in: `{"groups":["a","b","a"]}`, want: "a,b"},
		{name: "not json", in: `room`, err: "want {"},
		{name: "empty", in: ``, err: "want {"},
		{name: "no groups", in: `{}`, err: "1 to 100"},
		{name: "empty list", in: `{"groups":[]}`, err: "1 to 100"},
		{name: "too many", in: many, err: "1 to 100"},
		{name: "bad name", in: `{"groups":["a","b.c"]}`, err: `group "b.c"`},
		{name: "not strings", in: `{"groups":[1]}`, err: "want {"},
		{name: "unknown field", in: `{"groups":["a"],"x":1}`, err: "unknown field"},
		{name: "trailing", in: `{"groups":["a"]}[]`, err: "data after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := wire.DecodeMembership([]byte(tc.in))
			schemaErr := check.Check(schemacheck.Membership, []byte(tc.in))
			if tc.err != "" {
				if err == nil || !errors.Is(err, wire.ErrBadMembership) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if schemaErr == nil && tc.name != "trailing" && tc.name != "empty" {
					t.Fatalf("the schema accepts %s", tc.in)
				}
				return
			}
			if err != nil || strings.Join(m.Groups, ",") != tc.want {
				t.Fatalf("got %v %v, want %s", m.Groups, err, tc.want)
			}
			if tc.name != "duplicates dropped" && schemaErr != nil {
				t.Fatal(schemaErr)
			}
		})
	}
}

func TestControlAnswerMatchesTheSchema(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []wire.ControlAnswer{{OK: true}, {Error: &wire.ControlError{Code: 404, Message: "no such connection"}}} {
		data, _ := json.Marshal(a)
		if err := check.Check(schemacheck.ControlAnswer, data); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{`{}`, `{"ok":false}`, `{"ok":true,"error":{"code":400,"message":"x"}}`} {
		if check.Check(schemacheck.ControlAnswer, []byte(bad)) == nil {
			t.Errorf("schema accepts %s", bad)
		}
	}
}

func TestMembershipSubjects(t *testing.T) {
	s := wire.NewSubjects("")
	for got, want := range map[string]string{
		s.Join(wire.KindUser, "42"):     "ws.ctl.join.user.42",
		s.Leave(wire.KindConn, "e1.c1"): "ws.ctl.leave.conn.e1.c1",
		s.JoinAll():                     "ws.ctl.join.>",
		s.RoomsApply():                  "ws.rooms.apply",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}
