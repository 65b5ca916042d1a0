package devstack_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// killStack is a NATS server (in-process), two edge processes, a dispatcher
// process and a TCP proxy in front of edge1 playing the Kubernetes Service.
type killStack struct {
	ns                   *natsserver.Server
	nc                   *nats.Conn
	edge1                *proc
	edge1Addr, edge2Addr string
	proxy                *tcpProxy
}

func startKillStack(t *testing.T) *killStack {
	t.Helper()
	s := &killStack{ns: edgetest.RunNATS(t)}
	s.nc = edgetest.Connect(t, s.ns.ClientURL())
	s.edge1, s.edge1Addr = startEdgeProc(t, s.ns.ClientURL(), "edge1")
	_, s.edge2Addr = startEdgeProc(t, s.ns.ClientURL(), "edge2")
	startDispatcher(t, s.ns.ClientURL())
	s.proxy = startProxy(t, s.edge1Addr)
	return s
}

// kill9 SIGKILLs edge1, waits for it to die, and points the proxy at edge2,
// as a Service drops the endpoint of a dead pod. Safe off the test goroutine.
func (s *killStack) kill9() error {
	if err := s.edge1.cmd.Process.Kill(); err != nil {
		return err
	}
	select {
	case err := <-s.edge1.done:
		s.edge1.done <- err
	case <-time.After(edgetest.Timeout):
		return errors.New("edge1 did not die after SIGKILL")
	}
	s.proxy.setTarget(s.edge2Addr)
	return nil
}

// waitInterest waits until the NATS server holds n subscriptions matching
// subject (a literal subject).
func waitInterest(t *testing.T, ns *natsserver.Server, subject string, n int) {
	t.Helper()
	edgetest.Eventually(t, fmt.Sprintf("%d subscriptions on %s", n, subject), func() bool {
		sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: subject})
		return err == nil && sz.Total == n
	})
}

// hasConn reports whether the NATS server has an open client connection
// named name.
func hasConn(t *testing.T, ns *natsserver.Server, name string) bool {
	t.Helper()
	cz, err := ns.Connz(&natsserver.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cz.Conns {
		if c.Name == name {
			return true
		}
	}
	return false
}

// TestEdgeKill9_ClientsReconnectElsewhereAndNoStaleSubscriptions: an edge
// process dies by SIGKILL. Its clients see an abnormal close (1006, no close
// frame) and reconnect, through the proxy or straight to the other edge; the
// other edge's clients stay connected and keep receiving; once NATS notices
// the dead connection, its subscriptions are gone and the server holds only
// what the surviving edge needs; deliveries to the reconnected users arrive.
func TestEdgeKill9_ClientsReconnectElsewhereAndNoStaleSubscriptions(t *testing.T) {
	s := startKillStack(t)
	dial := func(url, user string) *edgetest.Client {
		c := edgetest.Dial(t, url, http.Header(bearer(token(t, user))))
		c.ExpectOK()
		return c
	}
	// edge1: ann through the proxy, abe directly. edge2: another tab of ann, and zoe.
	ann := dial(wsURL(s.proxy.addr()), "ann")
	abe := dial(wsURL(s.edge1Addr), "abe")
	ann2 := dial(wsURL(s.edge2Addr), "ann")
	zoe := dial(wsURL(s.edge2Addr), "zoe")
	waitInterest(t, s.ns, "ws.send.user.ann", 2)
	waitInterest(t, s.ns, "ws.send.user.abe", 1)
	waitInterest(t, s.ns, "ws.send.conn.edge1.x", 1)

	if err := s.kill9(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*edgetest.Client{"ann": ann, "abe": abe} {
		if code, _ := c.WaitClose(); code != 1006 { // abnormal closure: no close frame
			t.Fatalf("%s's connection to the killed edge closed with %d, want 1006", name, code)
		}
	}

	// NATS notices the dead TCP connection; nothing of edge1 stays subscribed.
	edgetest.Eventually(t, "edge1's NATS connection gone", func() bool { return !hasConn(t, s.ns, "wsgate-edge edge1") })
	waitInterest(t, s.ns, "ws.send.user.ann", 1) // edge2's, for ann2
	waitInterest(t, s.ns, "ws.send.user.abe", 0)
	waitInterest(t, s.ns, "ws.send.conn.edge1.x", 0)

	// The other edge's clients are unaffected.
	if err := s.nc.Publish("ws.send.all", []byte(`{"action":"marker"}`)); err != nil {
		t.Fatal(err)
	}
	ann2.Expect("marker")
	zoe.Expect("marker")

	// The clients of edge1 come back: ann through the proxy (now on edge2),
	// abe straight to edge2.
	ann = dial(wsURL(s.proxy.addr()), "ann")
	abe = dial(wsURL(s.edge2Addr), "abe")
	waitInterest(t, s.ns, "ws.send.user.ann", 1) // one edge holds both tabs: one subscription
	waitInterest(t, s.ns, "ws.send.user.abe", 1)
	for subject, cs := range map[string][]*edgetest.Client{
		"ws.send.user.ann": {ann, ann2},
		"ws.send.user.abe": {abe},
	} {
		if err := s.nc.Publish(subject, []byte(`{"action":"after-kill"}`)); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			c.Expect("after-kill")
		}
	}
	ann.Send("echo", "back", "r-1")
	if f := ann.Expect("echo"); f.String() != `["echo","back","r-1"]` {
		t.Fatalf("echo after the reconnection: %s", f)
	}
	for name, c := range map[string]*edgetest.Client{"ann2": ann2, "zoe": zoe} {
		select {
		case <-c.Done():
			t.Fatalf("%s, on the surviving edge, was disconnected", name)
		default:
		}
	}
}

// TestEdgeKill9_JSClientReconnectsByItself runs testdata/node-kill.mjs: the
// JS client, connected to edge1 through the proxy, sees 1006 when edge1 is
// SIGKILLed, reconnects by itself with its backoff (the proxy now forwards to
// edge2), receives a user message and gets a reply from the dispatcher.
func TestEdgeKill9_JSClientReconnectsByItself(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		need(t, "no node in PATH (Debian: apt-get install nodejs)")
	}
	args := []string{"testdata/node-kill.mjs"}
	if nodeMajor(t, node) < 22 {
		args = append([]string{"--experimental-websocket"}, args...)
	}
	s := startKillStack(t)
	const user = "jill"
	var killed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("POST /control/kill-edge1", func(w http.ResponseWriter, r *http.Request) {
		// The client is connected and authenticated: its subscription is on
		// the server, held by edge1.
		if err := s.kill9(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		killed.Store(true)
	})
	mux.HandleFunc("POST /control/push", func(w http.ResponseWriter, r *http.Request) {
		data, _ := json.Marshal(map[string]any{"action": "push", "details": r.URL.Query().Get("text")})
		if err := s.nc.Publish("ws.send.user."+user, data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	site := httptest.NewServer(mux)
	t.Cleanup(site.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(),
		"WSGATE_PROXY="+wsURL(s.proxy.addr()),
		"WSGATE_TOKEN="+token(t, user),
		"WSGATE_CONTROL="+site.URL,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("node output:\n%s", out)
	if !killed.Load() {
		t.Fatal("the script ended without killing edge1")
	}
	// The script has closed its client: no subscription of jill is left,
	// neither the dead edge1's nor edge2's.
	edgetest.Eventually(t, "edge1's NATS connection gone", func() bool { return !hasConn(t, s.ns, "wsgate-edge edge1") })
	waitInterest(t, s.ns, "ws.send.user."+user, 0)
}
