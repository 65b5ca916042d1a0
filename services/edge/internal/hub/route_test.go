package hub

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// routedClient is a registered client whose socket's far end a Peer reads.
type routedClient struct {
	c    *Client
	peer *edgetest.Peer
}

// fakeHub is a hub on a fake NATS, running until the test ends, with a
// client authenticated as each of ids.
func fakeHub(t *testing.T, ids ...*auth.Identity) (*Hub, *edgetest.FakeNATS, []routedClient) {
	t.Helper()
	return fakeHubWith(t, false, ids...)
}

// fakeHubWith is fakeHub, delivering what the history stream republishes
// when history is set.
func fakeHubWith(t *testing.T, history bool, ids ...*auth.Identity) (*Hub, *edgetest.FakeNATS, []routedClient) {
	t.Helper()
	fake := &edgetest.FakeNATS{}
	h := New(fake, Config{EdgeID: "e1", Subjects: wire.NewSubjects("ws"), PingInterval: time.Minute, AuthTimeout: time.Minute, History: history})
	var clients []routedClient
	for i, id := range ids {
		server, far := edgetest.SocketPair(t)
		conn := wsconn.New(server, 16, stats.New(nil, nil).Shard(), nil)
		t.Cleanup(func() { conn.Abort(); conn.Wait() })
		c := NewClient(conn, "e1", "c"+strconv.Itoa(i), "127.0.0.1", "", "")
		h.Add(c)
		if err := h.Authenticate(context.Background(), c, id); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, routedClient{c: c, peer: edgetest.NewPeer(t, far)})
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return h, fake, clients
}

// TestRoute_EachMessageReachesExactlyItsTargets: messages to a user, a
// group, a session, a connection, every user and everyone reach the
// connections they name and no other, in publish order; a message for
// another prefix or for nobody here reaches nobody. Fails when deliver
// confuses two kinds of target, or the router reorders.
func TestRoute_EachMessageReachesExactlyItsTargets(t *testing.T) {
	h, fake, cs := fakeHub(t,
		&auth.Identity{User: "a", Session: "s1", Groups: []string{"g"}},
		&auth.Identity{User: "b", Session: "s2", Groups: []string{"g", "h"}},
		&auth.Identity{Groups: []string{}}, // anonymous
	)
	if got := fake.Subscriptions("ws.send.group.g"); got != 1 {
		t.Fatalf("%d subscriptions to a group two clients share, want 1", got)
	}
	anon := cs[2].c
	for _, m := range []struct{ subject, action string }{
		{"ws.send.user.a", "to-a"},
		{"ws.send.group.g", "to-g"},
		{"ws.send.group.h", "to-h"},
		{"ws.send.session.s2", "to-s2"},
		{"ws.send.users", "to-users"},
		{"ws.send.conn.e1." + anon.ID, "to-anon"},
		{"ws.send.user.nobody", "to-nobody"},
		{"other.send.all", "other-prefix"},
		{"ws.send.all", "end"},
	} {
		h.inbox <- &nats.Msg{Subject: m.subject, Data: []byte(`{"action":"` + m.action + `"}`)}
	}
	for i, want := range [][]string{
		{"to-a", "to-g", "to-users", "end"},
		{"to-g", "to-h", "to-s2", "to-users", "end"},
		{"to-anon", "end"},
	} {
		var got []string
		for len(got) == 0 || got[len(got)-1] != "end" {
			wf := cs[i].peer.Next()
			f, err := wf.Frame()
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			got = append(got, f.Action)
		}
		if !slices.Equal(got, want) {
			t.Errorf("client %d got %v, want %v", i, got, want)
		}
	}
}

// TestRoute_KickClosesOnlyItsTarget: ctl.close.user.<u> sends Server/close
// to u's connections alone. Fails when kick picks the wrong index.
func TestRoute_KickClosesOnlyItsTarget(t *testing.T) {
	h, _, cs := fakeHub(t,
		&auth.Identity{User: "a", Groups: []string{}},
		&auth.Identity{User: "b", Groups: []string{}},
	)
	h.inbox <- &nats.Msg{Subject: "ws.ctl.close.user.b"}
	h.inbox <- &nats.Msg{Subject: "ws.send.user.a", Data: []byte(`{"action":"still-here"}`)}
	cs[1].peer.Expect(wire.ActionClose)
	cs[0].peer.Expect("still-here")
	if cs[0].c.Conn.CloseCode() != 0 {
		t.Fatal("the kick closed another user's connection")
	}
}
