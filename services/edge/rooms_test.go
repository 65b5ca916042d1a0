package edge_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// twoEdges starts edges e1 and e2 on ns with env.
func twoEdges(t *testing.T, ns *natsserver.Server, env map[string]string) (*testEdge, *testEdge) {
	t.Helper()
	with := func(id string) map[string]string {
		m := map[string]string{"EDGE_ID": id}
		for k, v := range env {
			m[k] = v
		}
		return m
	}
	return startEdge(t, ns, with("e1")), startEdge(t, ns, with("e2"))
}

var presenceOn = map[string]string{"WS_PRESENCE": "memory"}

// control requests subject with payload and returns the answer.
func control(t *testing.T, nc *nats.Conn, subject, payload string) wire.ControlAnswer {
	t.Helper()
	m, err := nc.Request(subject, []byte(payload), edgetest.Timeout)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var a wire.ControlAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		t.Fatalf("%s: answer %s: %v", subject, m.Data, err)
	}
	return a
}

// mustOK requests a join or leave and fails unless it is answered ok.
func mustOK(t *testing.T, nc *nats.Conn, subject, payload string) {
	t.Helper()
	if a := control(t, nc, subject, payload); !a.OK || a.Error != nil {
		t.Fatalf("%s %s: answer %+v %+v", subject, payload, a, a.Error)
	}
}

// envelopeOf has c send action and returns the envelope the edge published.
func envelopeOf(t *testing.T, nc *nats.Conn, c *edgetest.Client, action string) wire.Envelope {
	t.Helper()
	sub := subscribe(t, nc, "ws.in."+action)
	defer sub.Unsubscribe()
	c.Send(action, nil)
	m, err := sub.NextMsg(edgetest.Timeout)
	if err != nil {
		t.Fatalf("no envelope for %s: %v", action, err)
	}
	var env wire.Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

// expectGroup publishes to group, then a marker to all, and checks that
// exactly the clients in in get the group's message first.
func expectGroup(t *testing.T, nc *nats.Conn, group string, in, out []*edgetest.Client) {
	t.Helper()
	publish(t, nc, "ws.send.group."+group, `{"action":"to-`+group+`"}`)
	publish(t, nc, "ws.send.all", marker)
	for _, c := range in {
		c.Expect("to-" + group)
		c.Expect("marker")
	}
	for _, c := range out {
		c.Expect("marker")
	}
}

// TestJoin_UserSessionConnAcrossEdges: joins by user, session and one
// connection reach exactly the right tabs on both edges; after leave none;
// a user who joined and reconnects to the other edge is still in the room.
// Fails when SetStored is not applied (the apply loop), when Join ignores
// the conn kind, or when hub.loadStored is removed (the reconnect).
func TestJoin_UserSessionConnAcrossEdges(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e1, e2 := twoEdges(t, ns, presenceOn)
	alice1 := e1.dial(t, map[string]any{"sub": "alice", "sid": "a1"})
	alice2 := e2.dial(t, map[string]any{"sub": "alice", "sid": "a2"})
	bob1 := e1.dial(t, map[string]any{"sub": "bob", "sid": "b1"})
	bob2 := e2.dial(t, map[string]any{"sub": "bob", "sid": "b2"})
	carol := e2.dial(t, map[string]any{"sub": "carol", "sid": "c1"})
	all := []*edgetest.Client{alice1, alice2, bob1, bob2, carol}
	others := func(in ...*edgetest.Client) []*edgetest.Client {
		var out []*edgetest.Client
		for _, c := range all {
			keep := true
			for _, x := range in {
				keep = keep && x != c
			}
			if keep {
				out = append(out, c)
			}
		}
		return out
	}

	mustOK(t, nc, "ws.ctl.join.user.alice", `{"groups":["room-a"]}`)
	expectGroup(t, nc, "room-a", []*edgetest.Client{alice1, alice2}, others(alice1, alice2))

	mustOK(t, nc, "ws.ctl.join.session.b2", `{"groups":["room-b"]}`)
	expectGroup(t, nc, "room-b", []*edgetest.Client{bob2}, others(bob2))

	carolConn := envelopeOf(t, nc, carol, "whoami").Connection
	mustOK(t, nc, "ws.ctl.join.conn."+carolConn, `{"groups":["room-c","room-a"]}`)
	expectGroup(t, nc, "room-c", []*edgetest.Client{carol}, others(carol))
	expectGroup(t, nc, "room-a", []*edgetest.Client{alice1, alice2, carol}, others(alice1, alice2, carol))

	mustOK(t, nc, "ws.ctl.leave.user.alice", `{"groups":["room-a"]}`)
	mustOK(t, nc, "ws.ctl.leave.session.b2", `{"groups":["room-b"]}`)
	mustOK(t, nc, "ws.ctl.leave.conn."+carolConn, `{"groups":["room-c","room-a"]}`)
	for _, g := range []string{"room-a", "room-b", "room-c"} {
		expectGroup(t, nc, g, nil, all)
	}

	// Stored: alice joins, every tab closes, and she comes back on the
	// other edge (and on the first one).
	mustOK(t, nc, "ws.ctl.join.user.alice", `{"groups":["room-r"]}`)
	mustOK(t, nc, "ws.ctl.join.session.a1", `{"groups":["room-s"]}`)
	alice1.WS.Close()
	alice2.WS.Close()
	waitSubs(t, ns, "ws.send.user.alice", 0)
	back2 := e2.dial(t, map[string]any{"sub": "alice", "sid": "a1"})
	back1 := e1.dial(t, map[string]any{"sub": "alice", "sid": "a3"})
	// A second tab where the edge already knows alice's joins (no load).
	back3 := e2.dial(t, map[string]any{"sub": "alice", "sid": "a1"})
	all = []*edgetest.Client{back1, back2, back3, bob1, bob2, carol}
	expectGroup(t, nc, "room-r", []*edgetest.Client{back1, back2, back3}, others(back1, back2, back3))
	expectGroup(t, nc, "room-s", []*edgetest.Client{back2, back3}, others(back2, back3))

	if got := e1.metricSum(t, "wsgate_edge_joins_total") + e2.metricSum(t, "wsgate_edge_joins_total"); got != 5 {
		t.Errorf("joins counted %v, want 5", got)
	}
}

// TestJoin_AnswerMeansInForce: a message published to the group the instant
// the join is answered is never lost, for 200 concurrent joins of users
// spread over two edges. Fails when the apply loop replies before
// Members.Confirm, or when the coordinator answers before every live edge
// replied (gather).
func TestJoin_AnswerMeansInForce(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	pub := edgetest.Connect(t, ns.ClientURL())
	e1, e2 := twoEdges(t, ns, presenceOn)
	const n = 200
	clients := make([]*edgetest.Client, n)
	for i := range n {
		e := e1
		if i%2 == 1 {
			e = e2
		}
		clients[i] = e.dial(t, map[string]any{"sub": fmt.Sprintf("u%d", i)})
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := nc.Request(fmt.Sprintf("ws.ctl.join.user.u%d", i), []byte(fmt.Sprintf(`{"groups":["g%d"]}`, i)), 30*time.Second)
			if err != nil {
				errs <- err
				return
			}
			if string(m.Data) != `{"ok":true}` {
				errs <- fmt.Errorf("u%d: answer %s", i, m.Data)
				return
			}
			if err := pub.Publish(fmt.Sprintf("ws.send.group.g%d", i), []byte(`{"action":"room"}`)); err != nil {
				errs <- err
				return
			}
			f, ok := clients[i].Take()
			if !ok || f.Action != "room" {
				errs <- fmt.Errorf("u%d: got %v %v, want the room's message", i, f, ok)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestJoin_TokenGroupsCannotBeLeft: leaving a group the token grants takes
// away only the joined membership; the connection stays in it. Fails when
// groupsLocked drops token groups that a leave names.
func TestJoin_TokenGroupsCannotBeLeft(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e1, _ := twoEdges(t, ns, presenceOn)
	c := e1.dial(t, map[string]any{"sub": "dave", "groups": []string{"staff"}})
	other := e1.dial(t, map[string]any{"sub": "erin"})
	mustOK(t, nc, "ws.ctl.join.user.dave", `{"groups":["staff","room"]}`)
	mustOK(t, nc, "ws.ctl.leave.user.dave", `{"groups":["staff","room"]}`)
	conn := envelopeOf(t, nc, c, "whoami").Connection
	mustOK(t, nc, "ws.ctl.join.conn."+conn, `{"groups":["staff"]}`)
	mustOK(t, nc, "ws.ctl.leave.conn."+conn, `{"groups":["staff"]}`)
	expectGroup(t, nc, "staff", []*edgetest.Client{c}, []*edgetest.Client{other})
	expectGroup(t, nc, "room", nil, []*edgetest.Client{c, other})
}

// TestJoin_BadRequestsAreRefusedAndChangeNothing: every bad payload or
// target gets a 400 (404 for a connection that does not exist) with a
// reason, stores nothing and subscribes nothing. Fails when run skips
// wire.DecodeMembership or parseTarget.
func TestJoin_BadRequestsAreRefusedAndChangeNothing(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e1, _ := twoEdges(t, ns, presenceOn)
	c := e1.dial(t, map[string]any{"sub": "frank", "sid": "f1"})
	for _, tc := range []struct {
		name, subject, payload, reason string
		code                           int
	}{
		{"not json", "ws.ctl.join.user.frank", `room`, "want {\"groups\"", 400},
		{"empty", "ws.ctl.join.user.frank", ``, "want {\"groups\"", 400},
		{"no groups", "ws.ctl.join.user.frank", `{}`, "1 to 100 groups", 400},
		{"empty list", "ws.ctl.join.session.f1", `{"groups":[]}`, "1 to 100 groups", 400},
		{"not a list", "ws.ctl.join.user.frank", `{"groups":"room"}`, "want {\"groups\"", 400},
		{"bad name among good", "ws.ctl.join.user.frank", `{"groups":["room","a*b"]}`, `group "a*b"`, 400},
		{"unknown field", "ws.ctl.join.user.frank", `{"groups":["room"],"ttl":5}`, "unknown field", 400},
		{"trailing data", "ws.ctl.leave.user.frank", `{"groups":["room"]} {}`, "data after", 400},
		{"bad kind", "ws.ctl.join.room.x", `{"groups":["room"]}`, "bad target", 400},
		{"dotted user", "ws.ctl.join.user.frank.x", `{"groups":["room"]}`, "bad target", 400},
		{"conn without edge", "ws.ctl.join.conn.x", `{"groups":["room"]}`, "bad target", 400},
		{"conn of unknown edge", "ws.ctl.join.conn.nowhere.x", `{"groups":["room"]}`, "no such connection", 404},
		{"conn unknown on a live edge", "ws.ctl.join.conn.e1.x", `{"groups":["room"]}`, "no such connection", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := control(t, nc, tc.subject, tc.payload)
			if a.OK || a.Error == nil || a.Error.Code != tc.code || !strings.Contains(a.Error.Message, tc.reason) {
				t.Fatalf("answer %+v %+v, want %d %q", a, a.Error, tc.code, tc.reason)
			}
		})
	}
	expectGroup(t, nc, "room", nil, []*edgetest.Client{c})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), "wsgate_members")
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := kv.Keys(context.Background()); !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatalf("stored keys %v (%v), want none", keys, err)
	}
}

// TestJoin_EnvelopeListsJoinedGroups: the inbound envelope's groups are the
// token's and the joined ones. Fails when session.publish goes back to
// id.Groups.
func TestJoin_EnvelopeListsJoinedGroups(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	e1, _ := twoEdges(t, ns, presenceOn)
	c := e1.dial(t, map[string]any{"sub": "gina", "sid": "g1", "groups": []string{"staff"}})
	mustOK(t, nc, "ws.ctl.join.user.gina", `{"groups":["room-1"]}`)
	mustOK(t, nc, "ws.ctl.join.session.g1", `{"groups":["room-2"]}`)
	env := envelopeOf(t, nc, c, "hi")
	mustOK(t, nc, "ws.ctl.join.conn."+env.Connection, `{"groups":["room-3","staff"]}`)
	env = envelopeOf(t, nc, c, "hi")
	if got := strings.Join(env.Groups, ","); got != "staff,room-1,room-2,room-3" {
		t.Fatalf("envelope groups %q", got)
	}
}

// TestJoin_PresenceOff: with WS_PRESENCE=off a join reaches the
// connections open at that moment only (on both edges), nothing is stored,
// and a plain publish applies it without an answer. Fails when the
// coordinator stores without a Store, or when hub.Join is not applied to
// user targets.
func TestJoin_PresenceOff(t *testing.T) {
	ns := edgetest.RunNATS(t) // no JetStream: nothing could be stored
	nc := edgetest.Connect(t, ns.ClientURL())
	e1, e2 := twoEdges(t, ns, nil)
	h1 := e1.dial(t, map[string]any{"sub": "hal"})
	h2 := e2.dial(t, map[string]any{"sub": "hal"})
	mustOK(t, nc, "ws.ctl.join.user.hal", `{"groups":["room"]}`)
	later := e2.dial(t, map[string]any{"sub": "hal"})
	expectGroup(t, nc, "room", []*edgetest.Client{h1, h2}, []*edgetest.Client{later})
	mustOK(t, nc, "ws.ctl.leave.user.hal", `{"groups":["room"]}`)
	expectGroup(t, nc, "room", nil, []*edgetest.Client{h1, h2, later})

	// A plain publish: applied, unanswered.
	publish(t, nc, "ws.ctl.join.user.hal", `{"groups":["lobby"]}`)
	waitSubs(t, ns, "ws.send.group.lobby", 2)
	expectGroup(t, nc, "lobby", []*edgetest.Client{h1, h2, later}, nil)
}
