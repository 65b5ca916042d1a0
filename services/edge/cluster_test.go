package edge_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// republishEvery is how often publishUntil publishes while it waits for the
// first delivery; it bounds the resolution of the measured gaps.
const republishEvery = 2 * time.Millisecond

// TestNATSClusterNodeLoss_EdgeFailsOverAndDeliveryResumes: the NATS node the
// edge is connected to shuts down; the edge moves to another node of the
// cluster, no WebSocket client is disconnected, and user, group and broadcast
// delivery resume for a publisher on a surviving node. The time from the
// shutdown to the first delivery is logged as the failover gap.
func TestNATSClusterNodeLoss_EdgeFailsOverAndDeliveryResumes(t *testing.T) {
	nodes := runNATSCluster(t, 3)
	urls := make([]string, len(nodes))
	for i, ns := range nodes {
		urls[i] = ns.ClientURL()
	}
	const edgeName = "wsgate-edge cluster-edge" // natsconn names the connection after EDGE_ID
	e := startEdge(t, nodes[0], map[string]string{"NATS_URL": strings.Join(urls, ","), "EDGE_ID": "cluster-edge"})
	alice := e.dial(t, map[string]any{"sub": "alice"})
	bob := e.dial(t, map[string]any{"sub": "bob", "groups": []string{"g"}})
	carol := e.dial(t, map[string]any{"sub": "carol"})

	home := -1
	edgetest.Eventually(t, "the edge on one node", func() bool {
		home = nodeOf(nodes, edgeName)
		return home >= 0
	})
	survivor := nodes[(home+1)%len(nodes)]
	nc := edgetest.Connect(t, survivor.ClientURL())
	// Before the fault: the edge's interest has reached the survivor and
	// delivery works across the cluster.
	for _, subj := range []string{"ws.send.user.alice", "ws.send.group.g"} {
		edgetest.Eventually(t, "interest in "+subj+" on the survivor", func() bool {
			return survivor.GlobalAccount().Interest(subj) > 0 // counts routed interest too, unlike Subsz
		})
	}
	publish(t, nc, "ws.send.user.alice", `{"action":"before"}`)
	publish(t, nc, "ws.send.group.g", `{"action":"before"}`)
	publish(t, nc, "ws.send.all", marker)
	alice.Expect("before")
	bob.Expect("before")
	for _, c := range []*edgetest.Client{alice, bob, carol} {
		c.Expect("marker")
	}

	t.Logf("shutting down node %d, which holds the edge's NATS connection", home)
	down := time.Now()
	nodes[home].Shutdown()
	nodes[home].WaitForShutdown()
	shutdownTook := time.Since(down)

	userAt := publishUntil(t, nc, "ws.send.user.alice", "after-user", alice)
	groupAt := publishUntil(t, nc, "ws.send.group.g", "after-group", bob)
	allAt := publishUntil(t, nc, "ws.send.all", "after-all", carol)
	gap := userAt.Sub(down)
	t.Logf("failover gap: %d ms (shutdown itself %d ms; group delivered after %d ms, broadcast after %d ms)",
		gap.Milliseconds(), shutdownTook.Milliseconds(), groupAt.Sub(down).Milliseconds(), allAt.Sub(down).Milliseconds())
	writeReport(t, "failover-gap.txt", fmt.Sprintf("failover gap: %d ms\n", gap.Milliseconds()))

	moved := nodeOf(nodes, edgeName)
	if moved < 0 || moved == home {
		t.Fatalf("edge connection on node %d after the loss of node %d", moved, home)
	}
	edgetest.Eventually(t, "edge ready after the failover", func() bool { return e.status("/readyz") == http.StatusOK })
	// nats.go calls the reconnect handler, which counts, on a goroutine of
	// its own: delivery can resume before it ran.
	edgetest.Eventually(t, "the reconnect counted", func() bool { return e.metricSum(t, "wsgate_edge_nats_reconnects_total") >= 1 })
	for name, c := range map[string]*edgetest.Client{"alice": alice, "bob": bob, "carol": carol} {
		select {
		case <-c.Done():
			t.Fatalf("%s was disconnected by the loss of a NATS node", name)
		default:
		}
	}
}

// runNATSCluster starts n in-process NATS servers routed into one cluster on
// loopback and waits until every server has a route to every other one.
func runNATSCluster(t *testing.T, n int) []*natsserver.Server {
	t.Helper()
	nodes := make([]*natsserver.Server, 0, n)
	var seed string
	for i := range n {
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("node-%d", i),
			Cluster:    natsserver.ClusterOpts{Name: "wsgate-test", Host: "127.0.0.1", Port: -1},
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
	edgetest.Eventually(t, "a full mesh of routes", func() bool {
		for _, ns := range nodes {
			rz, err := ns.Routez(nil)
			if err != nil {
				return false
			}
			peers := map[string]bool{}
			for _, r := range rz.Routes {
				peers[r.RemoteID] = true
			}
			if len(peers) != n-1 {
				return false
			}
		}
		return true
	})
	return nodes
}

// nodeOf returns the index of the running node holding the client
// connection named name, or -1.
func nodeOf(nodes []*natsserver.Server, name string) int {
	for i, ns := range nodes {
		if !ns.Running() {
			continue
		}
		cz, err := ns.Connz(&natsserver.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, c := range cz.Conns {
			if c.Name == name {
				return i
			}
		}
	}
	return -1
}

// publishUntil publishes {"action": action} to subject every republishEvery
// until c receives a frame of that action, and returns when it did. Frames
// of other actions are skipped: publishes during a fault may be lost, and
// earlier probes may still arrive (core NATS is at-most-once).
func publishUntil(t *testing.T, nc *nats.Conn, subject, action string, c *edgetest.Client) time.Time {
	t.Helper()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(republishEvery)
		defer tick.Stop()
		data := []byte(`{"action":"` + action + `"}`)
		for {
			_ = nc.Publish(subject, data) // a failed publish is retried at the next tick
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for {
		f, ok := c.Take()
		if !ok {
			t.Fatalf("no %q frame from %s within the timeout (connection ended: %v)", action, subject, isDone(c))
		}
		if f.Action == action {
			return time.Now()
		}
	}
}

func isDone(c *edgetest.Client) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// writeReport writes a figure to $WSGATE_REPORT_DIR/name when the variable
// is set, for whoever collects the fault figures.
func writeReport(t *testing.T, name, text string) {
	t.Helper()
	dir := os.Getenv("WSGATE_REPORT_DIR")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("report dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatalf("report: %v", err)
	}
}
