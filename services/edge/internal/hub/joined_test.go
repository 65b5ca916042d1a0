package hub

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// joinedHub is a hub on a real NATS server with clients authenticated as
// ids.
func joinedHub(t *testing.T, ids ...*auth.Identity) (*Hub, []*Client) {
	t.Helper()
	nc := testkit.Connect(t, testkit.RunNATS(t, nil).ClientURL())
	h := New(nc, Config{EdgeID: "e1", Subjects: wire.NewSubjects(""), PingInterval: time.Second, AuthTimeout: time.Second})
	var clients []*Client
	for i, id := range ids {
		c := newTestClient(i, time.Now())
		h.Add(c)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := h.Authenticate(ctx, c, id)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	return h, clients
}

func groupsOf(c *Client) string { return strings.Join(c.Groups(), ",") }

// TestSetStored_NewestRevisionWins: a stored set older than the one an edge
// has changes nothing, so an apply message and a connection's load may
// arrive in any order. Fails when setStoredLocked's revision check goes.
func TestSetStored_NewestRevisionWins(t *testing.T) {
	h, cs := joinedHub(t, &auth.Identity{User: "u", Session: "s", Groups: []string{"t"}})
	c := cs[0]
	if _, err := h.SetStored(wire.KindUser, "u", 5, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if n, err := h.SetStored(wire.KindUser, "u", 3, []string{"b"}); n != 1 || err != nil {
		t.Fatalf("stale set: %d %v", n, err)
	}
	if got := groupsOf(c); got != "t,a" {
		t.Fatalf("groups %q after a stale set, want t,a", got)
	}
	if _, err := h.SetStored(wire.KindSession, "s", 7, []string{"b", "a"}); err != nil {
		t.Fatal(err)
	}
	if got := groupsOf(c); got != "t,a,b" {
		t.Fatalf("groups %q, want t,a,b", got)
	}
	// Nobody of that user here: nothing is kept.
	if n, _ := h.SetStored(wire.KindUser, "other", 9, []string{"x"}); n != 0 || len(h.stored) != 2 {
		t.Fatalf("stored %d entries for an absent user (n=%d)", len(h.stored), n)
	}
	h.Remove(c)
	if len(h.stored) != 0 || len(h.groups) != 0 {
		t.Fatalf("after the last connection: %d stored, %d group topics", len(h.stored), len(h.groups))
	}
	if got := groupsOf(c); got != "t,a,b" {
		t.Fatalf("a removed client's groups %q, want its last ones for its disconnection event", got)
	}
}

// TestJoin_SubscriptionsStayReferenceCounted: a group joined by two
// connections is one subscription until both left; token groups stay.
func TestJoin_SubscriptionsStayReferenceCounted(t *testing.T) {
	h, cs := joinedHub(t,
		&auth.Identity{User: "u", Groups: []string{"t"}},
		&auth.Identity{User: "v", Groups: []string{"t"}})
	for _, c := range cs {
		if n, err := h.Join(wire.KindConn, c.ID, []string{"g", "t"}, true); n != 1 || err != nil {
			t.Fatalf("join: %d %v", n, err)
		}
	}
	sub := h.groups["g"].sub
	if len(h.groups["g"].clients) != 2 || h.cfg.Stats.Subscriptions.Load() != 4 { // u, v, t, g
		t.Fatalf("g has %d clients, %d subscriptions", len(h.groups["g"].clients), h.cfg.Stats.Subscriptions.Load())
	}
	if _, err := h.Join(wire.KindConn, cs[0].ID, []string{"g", "t"}, false); err != nil {
		t.Fatal(err)
	}
	if h.groups["g"].sub != sub || !sub.IsValid() {
		t.Fatal("the group's subscription changed while a member was left")
	}
	if got := groupsOf(cs[0]); got != "t" {
		t.Fatalf("groups %q after leaving, want the token's t", got)
	}
	if _, err := h.Join(wire.KindUser, "v", []string{"g"}, false); err != nil {
		t.Fatal(err)
	}
	if h.groups["g"] != nil || sub.IsValid() || !slices.Equal(cs[1].Groups(), []string{"t"}) {
		t.Fatal("the group is still subscribed after its last member left")
	}
	for _, c := range cs {
		h.Remove(c)
	}
}

// storeOf is a Loader over a map of "<kind>.<key>" to revision and groups.
type storeOf map[string]struct {
	rev    uint64
	groups []string
}

func (s storeOf) Load(_ context.Context, kind, key string) (uint64, []string, error) {
	v := s[kind+"."+key]
	return v.rev, v.groups, nil
}

// TestReloadStored_PutsInForceTheChangesAnOutageHid: a join or a leave
// applied while the edge was cut from NATS never reached it; after the
// reconnection the edge reads the stored joins of its users and sessions
// again and regroups their connections. A revision it already has, or an
// older one, changes nothing. Fails when ReloadStored skips a target or
// when SetStored's revision check goes.
func TestReloadStored_PutsInForceTheChangesAnOutageHid(t *testing.T) {
	store := storeOf{"user.u": {1, []string{"a"}}, "session.s": {2, []string{"b"}}}
	nc := testkit.Connect(t, testkit.RunNATS(t, nil).ClientURL())
	h := New(nc, Config{EdgeID: "e1", Subjects: wire.NewSubjects(""), PingInterval: time.Second, AuthTimeout: time.Second, Memberships: store})
	c := newTestClient(0, time.Now())
	h.Add(c)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := h.Authenticate(ctx, c, &auth.Identity{User: "u", Session: "s", Groups: []string{"t"}}); err != nil {
		t.Fatal(err)
	}
	if got := groupsOf(c); got != "t,a,b" {
		t.Fatalf("groups %q after authentication, want t,a,b", got)
	}
	// Meanwhile, elsewhere: u left a and joined c; s's change is older
	// than what this edge has.
	store["user.u"] = struct {
		rev    uint64
		groups []string
	}{3, []string{"c"}}
	store["session.s"] = struct {
		rev    uint64
		groups []string
	}{1, nil}
	if err := h.ReloadStored(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got := groupsOf(c); got != "t,c,b" {
		t.Fatalf("groups %q after the reload, want t,c,b", got)
	}
	if _, in := h.groups["a"]; in {
		t.Fatal("still subscribed to the group left meanwhile")
	}
}
