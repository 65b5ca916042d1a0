package hub

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
)

// republishedMsg is a message as the history stream republishes it.
func republishedMsg(target, action string, seq uint64) *nats.Msg {
	m := nats.NewMsg("ws.out." + target)
	m.Header.Set(wire.HeaderSequence, strconv.FormatUint(seq, 10))
	m.Data = []byte(`{"action":"` + action + `"}`)
	return m
}

// TestEndRecovery_AStreamRecreatedMeanwhileIsAnnounced: the history stream
// is recreated while a connection recovers (ResetPositions skips no
// connection). When its recovery read the old stream, the frames held
// before the recreation follow its replay, then the new epoch's
// Server/recovery, then the new stream's frames from its first sequence;
// when it read the new stream already, the old stream's held frames are
// dropped and the new ones follow its replay. Never a silent gap, never
// an old sequence taken for a new one.
func TestEndRecovery_AStreamRecreatedMeanwhileIsAnnounced(t *testing.T) {
	for _, tc := range []struct {
		name  string
		epoch string // the stream the recovery read
		last  uint64 // its last replayed sequence
		want  []string
	}{
		{"the recovery read the old stream", "old", 5, []string{"old-6", wire.ActionRecovery, "new-1", "new-2", "end"}},
		{"the recovery read the new stream", "new", 1, []string{"new-2", "end"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _, cs := fakeHubWith(t, true, &auth.Identity{User: "a", Groups: []string{}}, &auth.Identity{User: "b", Groups: []string{}})
			a, b := cs[0], cs[1]
			a.c.BeginRecovery()
			h.inbox <- republishedMsg("user.a", "old-6", 6)
			h.inbox <- &nats.Msg{Subject: "ws.send.user.b", Data: []byte(`{"action":"routed"}`)}
			b.peer.Expect("routed") // the router has held old-6 for a
			h.ResetPositions("new")
			h.inbox <- republishedMsg("user.a", "new-1", 1)
			h.inbox <- republishedMsg("user.a", "new-2", 2)
			h.inbox <- &nats.Msg{Subject: "ws.send.user.b", Data: []byte(`{"action":"routed"}`)}
			b.peer.Expect("routed")
			if !a.c.EndRecovery(tc.epoch, tc.last) {
				t.Fatal("EndRecovery reported an overflow")
			}
			h.inbox <- &nats.Msg{Subject: "ws.send.user.a", Data: []byte(`{"action":"end"}`)}
			var got []string
			for len(got) == 0 || got[len(got)-1] != "end" {
				f, err := a.peer.Next().Frame()
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, f.Action)
				var r wire.Recovery
				if f.Action == wire.ActionRecovery && (json.Unmarshal(f.Details, &r) != nil || r.Epoch != "new" || r.Recovered) {
					t.Fatalf("announcement %s, want the new epoch, not recovered", f.Details)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}
