package edge_test

import (
	"net"
	"net/http"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestNATSUnreachableAtStart_EdgeStartsAndBecomesReadyWhenNATSAppears: the
// edge starts while nothing listens at NATS_URL. It serves anyway: /healthz
// 200, /readyz 503. Once a NATS server comes up at that address the edge
// becomes ready, and a client that connects then receives a user message.
// Meanwhile upgrades are refused with 503: the edge could neither confirm a
// client's subscriptions (DESIGN §4: ok only after the server did) nor carry
// its messages, and the client is better served by another edge.
func TestNATSUnreachableAtStart_EdgeStartsAndBecomesReadyWhenNATSAppears(t *testing.T) {
	addr := freeAddr(t)
	e := launchEdge(t, "nats://"+addr.String(), nil)

	if got := e.status("/healthz"); got != http.StatusOK {
		t.Fatalf("/healthz %d without NATS, want 200", got)
	}
	if got := e.status("/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz %d without NATS, want 503", got)
	}
	_, resp, err := edgetest.TryDial(t, e.URL, bearer(token(t, map[string]any{"sub": "early"})))
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade without NATS: %v (response %v), want HTTP 503", err, resp)
	}

	ns := edgetest.RunNATSWith(t, &natsserver.Options{Host: addr.IP.String(), Port: addr.Port})
	edgetest.Eventually(t, "edge ready once NATS is up", func() bool { return e.status("/readyz") == http.StatusOK })
	late := e.dial(t, map[string]any{"sub": "late"})
	nc := edgetest.Connect(t, ns.ClientURL())
	publish(t, nc, "ws.send.user.late", `{"action":"welcome"}`)
	late.Expect("welcome")
}

// freeAddr returns a loopback address where nothing listens (it did a moment
// ago, so nothing else is likely to take it before the test does).
func freeAddr(t *testing.T) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
