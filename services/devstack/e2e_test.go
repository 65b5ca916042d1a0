package devstack_test

import (
	"net/http"
	"testing"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestSeedHello_EveryTabOnEveryEdge is the seed module's example, end to
// end: two edge processes, one dispatcher process, a real NATS server.
func TestSeedHello_EveryTabOnEveryEdge(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	edge1 := startEdge(t, ns.ClientURL(), "edge1")
	edge2 := startEdge(t, ns.ClientURL(), "edge2")
	startDispatcher(t, ns.ClientURL())

	dial := func(url, user string) *edgetest.Client {
		c := edgetest.Dial(t, url, http.Header(bearer(token(t, user))))
		c.ExpectOK()
		return c
	}
	alice := []*edgetest.Client{dial(edge1, "alice"), dial(edge1, "alice"), dial(edge2, "alice")}
	bob := dial(edge2, "bob")

	alice[0].Send("hello", "Hello, world!")
	for i, tab := range alice {
		if f := tab.Expect("hello"); f.String() != `["hello","Hello, world!"]` {
			t.Fatalf("tab %d got %s", i, f)
		}
	}
	alice[2].Send("hello", "")
	for i, tab := range alice {
		if f := tab.Expect("hello:error"); f.String() != `["hello:error",[400,"No hello message:("]]` {
			t.Fatalf("tab %d got %s", i, f)
		}
	}
	// bob saw none of it: his first frame is this marker.
	marker := func() {
		t.Helper()
		if err := nc.Publish("ws.send.all", []byte(`{"action":"marker"}`)); err != nil {
			t.Fatal(err)
		}
	}
	marker()
	bob.Expect("marker")
	for _, tab := range alice {
		tab.Expect("marker")
	}

	// echo answers the originating connection only, with its ref.
	alice[1].Send("echo", map[string]int{"n": 1}, "r-1")
	if f := alice[1].Expect("echo"); f.String() != `["echo",{"n":1},"r-1"]` {
		t.Fatalf("echo reply %s", f)
	}
	marker()
	for _, tab := range append(alice, bob) {
		tab.Expect("marker")
	}
}
