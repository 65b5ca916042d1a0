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
			h.BeginRecovery(a.c)
			h.inbox <- republishedMsg("user.a", "old-6", 6)
			h.inbox <- &nats.Msg{Subject: "ws.send.user.b", Data: []byte(`{"action":"routed"}`)}
			b.peer.Expect("routed") // the router has held old-6 for a
			h.ResetPositions("new")
			h.inbox <- republishedMsg("user.a", "new-1", 1)
			h.inbox <- republishedMsg("user.a", "new-2", 2)
			h.inbox <- &nats.Msg{Subject: "ws.send.user.b", Data: []byte(`{"action":"routed"}`)}
			b.peer.Expect("routed")
			if live, again := h.EndRecovery(a.c, tc.epoch, tc.last); !live || again {
				t.Fatalf("EndRecovery: live %v, again %v", live, again)
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

// TestEndRecovery_AReplayANATSOutageCutShortIsCaughtUpAgain: NATS drops
// while a connection's recovery runs (HoldLive passes it by, as it is on
// hold already), or the recovery began while NATS was away: what the
// stream republished meanwhile never reached the edge, so the end of that
// replay keeps the connection on hold from its position, to be caught up
// again, rather than letting it go live over a silent gap (DESIGN.md §8).
// A hold that no outage touched ends as before.
func TestEndRecovery_AReplayANATSOutageCutShortIsCaughtUpAgain(t *testing.T) {
	h, _, cs := fakeHubWith(t, true, &auth.Identity{User: "a", Groups: []string{}}, &auth.Identity{User: "b", Groups: []string{}},
		&auth.Identity{User: "z", Groups: []string{}})
	a, b, z := cs[0], cs[1], cs[2] // z has no position: never held, it shows what the router has done
	routed := func() {
		t.Helper()
		h.inbox <- &nats.Msg{Subject: "ws.send.user.z", Data: []byte(`{"action":"routed"}`)}
		z.peer.Expect("routed")
	}
	h.BeginRecovery(b.c)
	if live, again := h.EndRecovery(b.c, "e", 0); !live || again {
		t.Fatalf("a recovery without an outage: live %v, again %v", live, again)
	}

	h.BeginRecovery(a.c)
	// Held during the replay, before the outage: it must wait for the
	// catch-up, as what the stream stored during the outage may come
	// before it.
	h.inbox <- republishedMsg("user.a", "live-4", 4)
	routed()
	if held := h.HoldLive(); len(held) != 1 || held[0] != b.c {
		t.Fatalf("HoldLive held %d connections, want the live one only", len(held))
	}
	h.inbox <- &nats.Msg{Subject: "ws.send.user.b", Data: []byte(`{"action":"routed"}`)}
	if live, again := h.EndRecovery(a.c, "e", 3); !live || !again {
		t.Fatalf("a recovery an outage cut short: live %v, again %v, want to be caught up again", live, again)
	}
	h.NATSBack()
	if got := h.BeginCatchUp(a.c); got != 3 {
		t.Fatalf("caught up again from %d, want 3, where its replay ended", got)
	}
	h.inbox <- republishedMsg("user.a", "live-6", 6)
	routed()
	if live, again := h.EndRecovery(b.c, "e", 0); !live || again {
		t.Fatalf("the catch-up of a held connection: live %v, again %v", live, again)
	}
	b.peer.Expect("routed") // held for b until its catch-up ended
	// The catch-up replayed 4 and 5.
	if live, again := h.EndRecovery(a.c, "e", 5); !live || again {
		t.Fatalf("the catch-up after NATS came back: live %v, again %v", live, again)
	}
	h.inbox <- &nats.Msg{Subject: "ws.send.user.a", Data: []byte(`{"action":"end"}`)}
	for _, want := range []string{"live-6", "end"} { // live-4 came in the catch-up's replay
		if f, err := a.peer.Next().Frame(); err != nil || f.Action != want {
			t.Fatalf("got %v (%v), want %s", f, err, want)
		}
	}

	// A recovery that began while NATS was away read nothing it can trust.
	h.HoldLive()
	h.BeginRecovery(a.c)
	h.NATSBack()
	if _, again := h.EndRecovery(a.c, "e", 6); !again {
		t.Fatal("a recovery begun during an outage went live")
	}
	h.BeginCatchUp(a.c)
	if _, again := h.EndRecovery(a.c, "e", 6); again {
		t.Fatal("its catch-up after NATS came back did not end the hold")
	}

	// An outage while a connection waits for its catch-up, before the
	// catch-up reads, does not make it read twice.
	h.HoldLive()
	h.HoldLive()
	h.NATSBack()
	h.BeginCatchUp(b.c)
	if _, again := h.EndRecovery(b.c, "e", 0); again {
		t.Fatal("a catch-up that read after both outages was asked again")
	}
}
