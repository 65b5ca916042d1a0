package devstack_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// runJetStreamCluster starts n in-process NATS nodes with JetStream in one
// cluster and waits until JetStream has a meta leader.
func runJetStreamCluster(t *testing.T, n int) []*natsserver.Server {
	t.Helper()
	// Started together, each with routes to all: a JetStream node is ready
	// for connections only once the cluster has a quorum. The cluster ports
	// are free ones the kernel picked.
	ports := make([]int, n)
	routes := make([]string, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", ports[i])
		ln.Close()
	}
	nodes := make([]*natsserver.Server, 0, n)
	for i := range n {
		opts := &natsserver.Options{
			ServerName: fmt.Sprintf("node-%d", i), JetStream: true, StoreDir: t.TempDir(),
			Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			Cluster: natsserver.ClusterOpts{Name: "wsgate-js", Host: "127.0.0.1", Port: ports[i]},
			Routes:  natsserver.RoutesFromStr(strings.Join(routes, ",")),
		}
		ns, err := natsserver.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		nodes = append(nodes, ns)
	}
	for _, ns := range nodes {
		if !ns.ReadyForConnections(60 * time.Second) {
			t.Fatal("cluster node not ready")
		}
	}
	nc := edgetest.Connect(t, nodes[0].ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("no JetStream meta leader: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every client waits, after half of its sends, until the leader's node has
// stopped, so that at least half of every client's sends come after the
// stop; of those, at least 80% must be acked (the new leader takes them).
//
// Mutations that fail it: acking before the stream's answer (an action
// acked during the failover but never stored is never handled), a stream
// with one replica (the leader's loss loses what it held, or the stream
// has no leader again: every later send is answered Server/ack:error), or
// a publisher that does not recover after the leader change (e.g. one that
// answers 503 to every frame after its first failed publish: the acks after
// the stop fall under 80%).
func TestReliable_ClusterLeaderStopped_EveryAckedActionHandled(t *testing.T) {
	nodes := runJetStreamCluster(t, 3)
	urls := make([]string, len(nodes))
	for i, ns := range nodes {
		urls[i] = ns.ClientURL()
	}
	natsURL := strings.Join(urls, ",")
	_, addr := startEdgeProc(t, natsURL, "edge1", "WS_INBOUND=file", "WS_INBOUND_REPLICAS=3")
	nc := edgetest.Connect(t, natsURL)
	st := waitStream(t, nc)
	b := newBackend(t, false)
	startReliableDispatcher(t, natsURL, b.routesFile(t, "order"))

	const perClient = 120
	users := []string{"ann", "bob", "cat"}
	var (
		mu         sync.Mutex
		acked      []string // "<user>.<id>" of every acked action
		ackErrors  int
		progress   atomic.Int64
		wg         sync.WaitGroup
		failures   = make(chan error, len(users))
		stopLeader = make(chan struct{})
		stopped    = make(chan struct{}) // closed once the leader's node has shut down
		sentAfter  int                   // sends after stopped was closed
		ackedAfter int                   // of which acked
	)
	abort := make(chan struct{}) // closed when the test ends, maybe before stopped
	t.Cleanup(func() { close(abort) })
	for _, user := range users {
		c := edgetest.Dial(t, wsURL(addr), http.Header(bearer(token(t, user))))
		c.ExpectOK()
		wg.Go(func() {
			for i := range perClient {
				after := false
				if i >= perClient/2 {
					select {
					case <-stopped:
					case <-abort:
						return
					}
					after = true
				}
				id := fmt.Sprintf("c-%d", i)
				if err := sendReliable(c, id, i); err != nil {
					failures <- err
					return
				}
				for answered := false; !answered; {
					f, ok := c.Take()
					if !ok {
						failures <- fmt.Errorf("%s: no answer to %s", user, id)
						return
					}
					ref := strings.Trim(string(f.Ref), `"`)
					switch {
					case f.Action == wire.ActionAck && ref == id:
						mu.Lock()
						acked = append(acked, user+"."+id)
						if after {
							ackedAfter++
						}
						mu.Unlock()
						answered = true
					case f.Action == wire.ErrorAction(wire.ActionAck) && ref == id:
						mu.Lock()
						ackErrors++ // not stored: the client would resend; not counted as acked
						mu.Unlock()
						answered = true
					}
				}
				if after {
					mu.Lock()
					sentAfter++
					mu.Unlock()
				}
				if progress.Add(1) == int64(len(users)*perClient/3) {
					close(stopLeader)
				}
			}
		})
	}

	select {
	case <-stopLeader:
	case err := <-failures:
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatal("clients made no progress")
	}
	info, err := st.Info(context.Background())
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		t.Fatalf("stream leader unknown: %v", err)
	}
	leader := -1
	for i, ns := range nodes {
		if ns.Name() == info.Cluster.Leader {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatalf("leader %q is none of the nodes", info.Cluster.Leader)
	}
	t.Logf("stopping node %d, the stream leader, while clients send", leader)
	nodes[leader].Shutdown()
	close(stopped)
	wg.Wait()
	select {
	case err := <-failures:
		t.Fatal(err)
	default:
	}

	mu.Lock()
	defer mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		requests, _ := b.counts()
		missing := 0
		for _, id := range acked {
			if requests[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acked actions never handled", missing, len(acked))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("acked %d of %d, ack errors during the failover %d; after the stop acked %d of %d; every acked action handled",
		len(acked), len(users)*perClient, ackErrors, ackedAfter, sentAfter)
	if want := len(users) * (perClient - perClient/2); sentAfter != want {
		t.Fatalf("%d sends after the stop, want %d", sentAfter, want)
	}
	if ackedAfter*5 < sentAfter*4 {
		t.Fatalf("after the leader's node stopped only %d of %d sends were acked, want at least 80%%: the publisher did not recover", ackedAfter, sentAfter)
	}
}
