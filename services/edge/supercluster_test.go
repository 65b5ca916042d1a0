package edge_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestSupercluster_DeliveryAndCloseCrossRegions: two 3-node NATS clusters
// ("east" and "west") joined by gateways, as two regions. A user with a tab
// in each region receives what a service in either region publishes to
// ws.send.user.<id>; a group spread over both regions receives each message
// once per connection; ws.ctl.close.user.<id> published in one region closes
// the user's connections in both. The cross-region latency and the gateway
// messages of one group send are logged.
func TestSupercluster_DeliveryAndCloseCrossRegions(t *testing.T) {
	east := runRegion(t, "east", 3, nil)
	west := runRegion(t, "west", 3, east[0])
	waitGateways(t, append(slices.Clone(east), west...), map[string]string{"east": "west", "west": "east"})

	eastEdge := startEdge(t, east[1], map[string]string{"EDGE_ID": "edge-east"})
	westEdge := startEdge(t, west[2], map[string]string{"EDGE_ID": "edge-west"})
	aliceEast := eastEdge.dial(t, map[string]any{"sub": "alice"})
	aliceWest := westEdge.dial(t, map[string]any{"sub": "alice"})
	bobEast := eastEdge.dial(t, map[string]any{"sub": "bob", "groups": []string{"room"}})
	carolWest := westEdge.dial(t, map[string]any{"sub": "carol", "groups": []string{"room"}})
	everyone := []*edgetest.Client{aliceEast, aliceWest, bobEast, carolWest}

	eastPub := edgetest.Connect(t, east[0].ClientURL())
	westPub := edgetest.Connect(t, west[0].ClientURL())
	for _, ns := range []*natsserver.Server{east[0], west[0]} {
		for _, subj := range []string{"ws.send.user.alice", "ws.send.group.room"} {
			edgetest.Eventually(t, "interest in "+subj+" in region "+ns.Name(), func() bool {
				return ns.GlobalAccount().Interest(subj) > 0
			})
		}
	}

	// Every message below is followed by a broadcast marker: one publisher's
	// messages arrive in order, so the marker as the next frame proves that
	// nothing was delivered twice.
	expectOnce := func(pub *nats.Conn, subject, action string, want ...*edgetest.Client) {
		t.Helper()
		publish(t, pub, subject, `{"action":"`+action+`"}`)
		publish(t, pub, "ws.send.all", marker)
		for _, c := range everyone {
			if slices.Contains(want, c) {
				if f := c.Next(); f.Action != action {
					t.Fatalf("got %s, want %s from %s", f, action, subject)
				}
			}
			if f := c.Next(); f.Action != "marker" {
				t.Fatalf("got %s after %s, want the marker only", f, subject)
			}
		}
	}
	expectOnce(westPub, "ws.send.user.alice", "from-west", aliceEast, aliceWest)
	expectOnce(eastPub, "ws.send.user.alice", "from-east", aliceEast, aliceWest)

	before := gatewayMsgs(t, east)
	expectOnce(eastPub, "ws.send.group.room", "room-message", bobEast, carolWest)
	// The group send and its marker crossed to west (plus whatever
	// interest traffic the gateways exchanged meanwhile).
	t.Logf("gateway messages east -> west for one group send and its marker: %d", gatewayMsgs(t, east)-before)

	// Added latency: alice's east tab receiving from a publisher in west
	// versus one in east, medians over a few round trips.
	same, cross := median(t, eastPub, aliceEast), median(t, westPub, aliceEast)
	t.Logf("user delivery to an east tab: %v from east, %v from west (added by the gateway: %v)", same, cross, cross-same)
	for range 2 * 21 { // the west tab got the probes too
		if f := aliceWest.Next(); f.Action != "probe" {
			t.Fatalf("alice's west tab got %s, want a probe", f)
		}
	}

	publish(t, eastPub, "ws.ctl.close.user.alice", "")
	for name, c := range map[string]*edgetest.Client{"east": aliceEast, "west": aliceWest} {
		if f := c.Next(); f.Action != "Server/close" {
			t.Fatalf("alice's %s tab got %s, want Server/close", name, f)
		}
		if code, _ := c.WaitClose(); code != websocket.CloseNormalClosure {
			t.Fatalf("alice's %s tab closed %d, want 1000", name, code)
		}
	}
	publish(t, westPub, "ws.send.all", marker)
	bobEast.Expect("marker")
	carolWest.Expect("marker")
	if eastEdge.status("/readyz") != http.StatusOK || westEdge.status("/readyz") != http.StatusOK {
		t.Fatal("an edge is not ready after the cross-region close")
	}
}

// runRegion starts a NATS cluster of n nodes named region, each with a
// gateway; with remote, each node's gateway dials remote's region.
func runRegion(t *testing.T, region string, n int, remote *natsserver.Server) []*natsserver.Server {
	t.Helper()
	var gateways []*natsserver.RemoteGatewayOpts
	if remote != nil {
		addr := remote.GatewayAddr()
		if addr == nil {
			t.Fatalf("region %s has no gateway listener", remote.ClusterName())
		}
		gateways = []*natsserver.RemoteGatewayOpts{{Name: remote.ClusterName(), URLs: []*url.URL{{Scheme: "nats", Host: addr.String()}}}}
	}
	nodes := make([]*natsserver.Server, 0, n)
	var seed string
	for i := range n {
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("%s-%d", region, i),
			Cluster:    natsserver.ClusterOpts{Name: region, Host: "127.0.0.1", Port: -1},
			Gateway:    natsserver.GatewayOpts{Name: region, Host: "127.0.0.1", Port: -1, Gateways: gateways},
		}
		if seed != "" {
			opts.Routes = natsserver.RoutesFromStr(seed)
		}
		ns := edgetest.RunNATSWith(t, opts)
		if seed == "" {
			seed = fmt.Sprintf("nats://%s", ns.ClusterAddr())
		}
		nodes = append(nodes, ns)
	}
	edgetest.Eventually(t, "a full mesh of routes in "+region, func() bool {
		for _, ns := range nodes {
			if ns.NumRoutes() < n-1 {
				return false
			}
		}
		return true
	})
	return nodes
}

// waitGateways waits until every node has an outbound gateway to the other
// region (peer[its region]).
func waitGateways(t *testing.T, nodes []*natsserver.Server, peer map[string]string) {
	t.Helper()
	edgetest.Eventually(t, "gateways between the regions", func() bool {
		for _, ns := range nodes {
			gz, err := ns.Gatewayz(nil)
			if err != nil || gz.OutboundGateways[peer[ns.ClusterName()]] == nil {
				return false
			}
		}
		return true
	})
}

// gatewayMsgs sums the messages the nodes sent through their outbound gateways.
func gatewayMsgs(t *testing.T, nodes []*natsserver.Server) int64 {
	t.Helper()
	var sum int64
	for _, ns := range nodes {
		gz, err := ns.Gatewayz(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gz.OutboundGateways {
			sum += g.Connection.OutMsgs
		}
	}
	return sum
}

// median publishes a probe to alice from pub several times and returns the
// median time until c receives it.
func median(t *testing.T, pub *nats.Conn, c *edgetest.Client) time.Duration {
	t.Helper()
	const rounds = 21 // the caller drains as many from alice's other tab
	took := make([]time.Duration, 0, rounds)
	for range rounds {
		start := time.Now()
		publish(t, pub, "ws.send.user.alice", `{"action":"probe"}`)
		if f := c.Next(); f.Action != "probe" {
			t.Fatalf("got %s, want probe", f)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	return took[rounds/2]
}
