package proto

import (
	"encoding/json"
	"testing"
)

func TestReliableFrameAndAck(t *testing.T) {
	id := AppendMsgID(nil, 1<<40+7, 1733540000123456789)
	if len(id) != MsgIDLen {
		t.Fatalf("id %q has %d characters, want %d", id, len(id), MsgIDLen)
	}
	seq, ns, ok := ParseMsgID(id)
	if !ok || seq != 1<<40+7 || ns != 1733540000123456789 {
		t.Fatalf("ParseMsgID(%q) = %d %d %v", id, seq, ns, ok)
	}
	frame := AppendWsgateReliable(nil, "echo", 42, id, []byte(`{"t":1}`))
	var f []json.RawMessage
	if err := json.Unmarshal(frame, &f); err != nil || len(f) != 4 || string(f[2]) != "42" || string(f[3]) != `"`+string(id)+`"` {
		t.Fatalf("frame %s is not [action, details, ref, id]", frame)
	}
	ack := `["Server/ack",{"duplicate":true,"durable":true},"` + string(id) + `"]`
	var got []Msg
	Wsgate{}.Decode([]byte(ack), func(m Msg) { got = append(got, Msg{m.Kind, append([]byte(nil), m.Body...)}) })
	if len(got) != 1 || got[0].Kind != KindAck {
		t.Fatalf("decoded %v, want one ack", got)
	}
	a, ok := ParseAck(got[0].Body)
	if !ok || string(a.ID) != string(id) || !a.Duplicate || !a.Durable {
		t.Fatalf("ParseAck = %+v %v", a, ok)
	}
	Wsgate{}.Decode([]byte(`["Server/ack:error",[503,"x"],"`+string(id)+`"]`), func(m Msg) {
		if m.Kind != KindError {
			t.Fatalf("ack error decoded as %s", m.Kind)
		}
	})
	if _, _, ok := ParseMsgID([]byte("zz")); ok {
		t.Fatal("a short id parsed")
	}
}
