package edge_test

import (
	"net"
	"net/http"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestNATSRestart_ClientsStayAndDeliveryResumes: NATS goes away under
// connected clients and comes back on the same address; no WebSocket client
// is disconnected and the edge's subscriptions are back.
func TestNATSRestart_ClientsStayAndDeliveryResumes(t *testing.T) {
	ns := edgetest.RunNATS(t)
	addr := ns.Addr().(*net.TCPAddr)
	e := startEdge(t, ns, nil)
	alice := e.dial(t, map[string]any{"sub": "alice", "groups": []string{"g"}})
	bob := e.dial(t, map[string]any{"sub": "bob"})

	ns.Shutdown()
	ns.WaitForShutdown()
	edgetest.Eventually(t, "edge not ready without NATS", func() bool { return e.status("/readyz") == http.StatusServiceUnavailable })
	if e.status("/healthz") != http.StatusOK {
		t.Fatal("/healthz failed during the NATS outage")
	}
	// Clients still talk to the edge while NATS is away.
	alice.Send("Client/ping", nil)
	alice.Expect("Server/pong")

	ns2 := edgetest.RunNATSWith(t, &natsserver.Options{Host: addr.IP.String(), Port: addr.Port})
	edgetest.Eventually(t, "edge ready again", func() bool { return e.status("/readyz") == http.StatusOK })
	waitSubs(t, ns2, "ws.send.user.alice", 1)
	waitSubs(t, ns2, "ws.send.group.g", 1)
	nc := edgetest.Connect(t, ns2.ClientURL())
	publish(t, nc, "ws.send.user.alice", `{"action":"after-restart"}`)
	publish(t, nc, "ws.send.all", marker)
	alice.Expect("after-restart")
	alice.Expect("marker")
	bob.Expect("marker")
	if v := e.metricSum(t, "wsgate_edge_nats_reconnects_total"); v < 1 {
		t.Fatalf("reconnects metric %v", v)
	}
	for _, c := range []*edgetest.Client{alice, bob} {
		select {
		case <-c.Done():
			t.Fatal("a client was disconnected by the NATS restart")
		default:
		}
	}
}
