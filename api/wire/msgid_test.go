package wire_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
)

func TestParseClientFrame_MessageID(t *testing.T) {
	long := strings.Repeat("x", 64)
	cases := []struct {
		name, in, id, ref string
		wantErr           string // substring; "" for success
	}{
		{name: "id after null ref", in: `["a",1,null,"m-1_A"]`, id: "m-1_A"},
		{name: "id after ref", in: `["a",1,"r","m1"]`, id: "m1", ref: `"r"`},
		{name: "spaces", in: ` [ "a" , 1 , 7 , "m1" ] `, id: "m1", ref: "7"},
		{name: "null id is absent", in: `["a",1,null,null]`},
		{name: "64 characters", in: `["a",1,null,"` + long + `"]`, id: long},
		{name: "65 characters", in: `["a",1,null,"` + long + `x"]`, wantErr: "longer than 64"},
		{name: "dot", in: `["a",1,null,"a.b"]`, wantErr: "invalid message id"},
		{name: "empty", in: `["a",1,null,""]`, wantErr: "empty"},
		{name: "escaped", in: `["a",1,null,"a\u002eb"]`, wantErr: "invalid message id"},
		{name: "number", in: `["a",1,null,5]`, wantErr: "id is not a string"},
		{name: "five elements", in: `["a",1,null,"m",1]`, wantErr: "got 5 elements"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := wire.ParseClientFrame([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, wire.ErrBadFrame) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || f.ID != tc.id || string(f.Ref) != tc.ref || f.Action != "a" {
				t.Fatalf("got %+v, %v; want id %q ref %q", f, err, tc.id, tc.ref)
			}
		})
	}
}

func TestAckFramesMatchTheSchemas(t *testing.T) {
	check, err := schemacheck.New()
	if err != nil {
		t.Fatal(err)
	}
	ack := wire.AppendAck(nil, "m-1", wire.Ack{Duplicate: true, Durable: true})
	if string(ack) != `["Server/ack",{"duplicate":true,"durable":true},"m-1"]` {
		t.Fatalf("ack %s", ack)
	}
	nack := wire.AckErrorFrame("m-1", 503, "inbound stream unavailable")
	if string(nack) != `["Server/ack:error",[503,"inbound stream unavailable"],"m-1"]` {
		t.Fatalf("ack error %s", nack)
	}
	for _, data := range [][]byte{ack, nack} {
		if err := check.Check(schemacheck.ServerFrame, data); err != nil {
			t.Errorf("%s: %v", data, err)
		}
	}
	for _, ok := range []string{`["a",1,null,"m1"]`, `["a",1,"r","m1"]`} {
		if err := check.Check(schemacheck.ClientFrame, []byte(ok)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{`["a",1,null,"a.b"]`, `["a",1,null,"` + strings.Repeat("x", 65) + `"]`, `["a",1,null,"m",2]`} {
		if err := check.Check(schemacheck.ClientFrame, []byte(bad)); err == nil {
			t.Errorf("%s accepted by the schema", bad)
		}
	}
}
