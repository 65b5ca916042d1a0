package wire_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

func TestAppendServerFrameSeq(t *testing.T) {
	for _, tc := range []struct {
		name, ref, want string
	}{
		{"no ref", "", `["hi",{"a":1},null,42]`},
		{"string ref", `"r"`, `["hi",{"a":1},"r",42]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := string(wire.AppendServerFrameSeq(nil, "hi", json.RawMessage(`{"a":1}`), json.RawMessage(tc.ref), 42))
			if got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	cases := []struct {
		name, in string
		want     wire.Since
		bad      bool
		// schemaAllows: JSON Schema counts 1e3 as an integer; the edge
		// takes plain digits only.
		schemaAllows bool
	}{
		{name: "valid", in: `{"epoch":"e1","seq":7}`, want: wire.Since{Epoch: "e1", Seq: 7}},
		{name: "zero", in: `{"epoch":"e1","seq":0}`, want: wire.Since{Epoch: "e1"}},
		{name: "negative", in: `{"epoch":"e1","seq":-1}`, bad: true},
		{name: "float", in: `{"epoch":"e1","seq":1.5}`, bad: true},
		{name: "exponent", in: `{"epoch":"e1","seq":1e3}`, bad: true, schemaAllows: true},
		{name: "absurd", in: `{"epoch":"e1","seq":99999999999999999999999}`, bad: true},
		{name: "past 2^53", in: `{"epoch":"e1","seq":9007199254740992}`, bad: true},
		{name: "string seq", in: `{"epoch":"e1","seq":"7"}`, bad: true},
		{name: "number epoch", in: `{"epoch":1,"seq":7}`, bad: true},
		{name: "empty epoch", in: `{"epoch":"","seq":7}`, bad: true},
		{name: "missing seq", in: `{"epoch":"e1"}`, bad: true},
		{name: "missing epoch", in: `{"seq":7}`, bad: true},
		{name: "extra member", in: `{"epoch":"e1","seq":7,"x":1}`, bad: true},
		{name: "array", in: `[1,2]`, bad: true},
		{name: "null", in: `null`, bad: true},
	}
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.ParseSince(json.RawMessage(tc.in))
			if tc.bad {
				if !errors.Is(err, wire.ErrBadSince) {
					t.Fatalf("accepted: %+v %v", got, err)
				}
				if !tc.schemaAllows && check.Check(schemacheck.Since, []byte(tc.in)) == nil {
					t.Fatalf("schema accepts what ParseSince refuses")
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v", got, err)
			}
			if err := check.Check(schemacheck.Since, []byte(tc.in)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestParseSinceQuery(t *testing.T) {
	if s, err := wire.ParseSinceQuery("abc:12"); err != nil || s != (wire.Since{Epoch: "abc", Seq: 12}) {
		t.Fatalf("got %+v %v", s, err)
	}
	for _, bad := range []string{"", "abc", "abc:", ":5", "abc:-1", "abc:x", "abc:1.0"} {
		if _, err := wire.ParseSinceQuery(bad); !errors.Is(err, wire.ErrBadSince) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHistoryFramesMatchTheSchemas(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(wire.Recovery{Epoch: "e", Recovered: true, Count: 3})
	for _, tc := range []struct {
		schema string
		data   []byte
	}{
		{schemacheck.ServerFrame, wire.AppendServerFrameSeq(nil, "hi", nil, nil, 1)},
		{schemacheck.ServerFrame, wire.AppendServerFrameSeq(nil, "hi", json.RawMessage(`"x"`), json.RawMessage(`5`), 1<<40)},
		{schemacheck.ServerFrame, wire.ServerFrame(wire.ActionRecovery, wire.Recovery{Epoch: "e"})},
		{schemacheck.Recovery, rec},
	} {
		if err := check.Check(tc.schema, tc.data); err != nil {
			t.Errorf("%s: %v", tc.data, err)
		}
	}
	for _, tc := range []struct{ schema, data string }{
		{schemacheck.ServerFrame, `["hi",1,null,0]`},
		{schemacheck.ServerFrame, `["hi",1,null,1,2]`},
		{schemacheck.Recovery, `{"epoch":"e","recovered":true}`},
		{schemacheck.Recovery, `{"epoch":"e","recovered":true,"count":0}`},
		{schemacheck.Recovery, `{"epoch":"e","recovered":true,"count":0,"seq":-1}`},
	} {
		if err := check.Check(tc.schema, []byte(tc.data)); err == nil {
			t.Errorf("%s accepted by %s", tc.data, tc.schema)
		}
	}
}

func TestHistorySubjects(t *testing.T) {
	s := wire.NewSubjects("")
	want := []string{"ws.send.all", "ws.send.users", "ws.send.filter", "ws.send.user.*", "ws.send.group.*", "ws.send.session.*"}
	got := s.HistorySubjects()
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if s.OutUser("42") != "ws.out.user.42" || s.OutAny() != "ws.out.>" || s.SendAny() != "ws.send.>" {
		t.Fatal("out subjects")
	}
}
