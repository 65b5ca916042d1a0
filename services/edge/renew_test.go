package edge_test

import (
	"net"
	"net/http"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestRenew_UnconfirmedRenewalAnswersErrorNotOK: a renewal that adds a group
// while NATS is away cannot have its subscription confirmed, so it is
// answered with Client/authentication:error 503, never ok (DESIGN §2). The
// connection stays with the identity it had: once NATS is back, the group
// of the failed renewal does not reach it, and renewing again works.
func TestRenew_UnconfirmedRenewalAnswersErrorNotOK(t *testing.T) {
	ns := edgetest.RunNATS(t)
	addr := ns.Addr().(*net.TCPAddr)
	e := startEdge(t, ns, nil)
	c := e.dial(t, map[string]any{"sub": "alice", "groups": []string{"red"}, "exp": time.Now().Add(time.Hour).Unix()})

	ns.Shutdown()
	ns.WaitForShutdown()
	edgetest.Eventually(t, "edge sees NATS gone", func() bool { return e.status("/readyz") == http.StatusServiceUnavailable })

	renewal := token(t, map[string]any{"sub": "alice", "groups": []string{"red", "blue"}, "exp": time.Now().Add(2 * time.Hour).Unix()})
	c.Send("Client/authentication", map[string]string{"token": renewal})
	f := c.Next()
	if f.Action != "Client/authentication:error" {
		t.Fatalf("renewal without NATS answered %s, want Client/authentication:error", f)
	}
	if code, _ := f.Error(); code != http.StatusServiceUnavailable {
		t.Fatalf("renewal error code %d, want 503", code)
	}
	// The connection stays.
	c.Send("Client/ping", nil)
	c.Expect("Server/pong")

	ns2 := edgetest.RunNATSWith(t, &natsserver.Options{Host: addr.IP.String(), Port: addr.Port})
	edgetest.Eventually(t, "edge ready again", func() bool { return e.status("/readyz") == http.StatusOK })
	waitSubs(t, ns2, "ws.send.group.red", 1)
	nc := edgetest.Connect(t, ns2.ClientURL())
	// The failed renewal left no subscription behind: blue is not alice's.
	publish(t, nc, "ws.send.group.blue", `{"action":"blue-before"}`)
	publish(t, nc, "ws.send.group.red", `{"action":"red"}`)
	c.Expect("red")

	c.Authenticate(renewal) // expects ok
	publish(t, nc, "ws.send.group.blue", `{"action":"blue-after"}`)
	c.Expect("blue-after")
}
