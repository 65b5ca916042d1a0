package devstack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nodeTimeout bounds the node e2e script.
const nodeTimeout = 60 * time.Second

// TestNode_ClientEndToEnd runs testdata/node-e2e.mjs: the JS client's source
// with Node's built-in WebSocket, no browser, against the same cluster as the
// browser tests (two edges, a dispatcher, NATS, the proxy). The script drives
// the cluster through the control endpoints added here.
func TestNode_ClientEndToEnd(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		need(t, "no node in PATH (Debian: apt-get install nodejs)")
	}
	args := []string{"testdata/node-e2e.mjs"}
	if nodeMajor(t, node) < 22 { // Node 22 has a global WebSocket by default
		args = append([]string{"--experimental-websocket"}, args...)
	}

	c := startCluster(t)
	c.mux.HandleFunc("POST /control/stop-edge1", func(w http.ResponseWriter, r *http.Request) {
		if err := c.edge1.stop(t); err != nil {
			http.Error(w, fmt.Sprintf("edge1 exited with %v after SIGTERM", err), http.StatusInternalServerError)
		}
	})
	c.mux.HandleFunc("POST /control/route-to-edge2", func(w http.ResponseWriter, r *http.Request) {
		c.proxy.setTarget(c.edge2Addr)
	})
	c.mux.HandleFunc("POST /control/kick", func(w http.ResponseWriter, r *http.Request) {
		if err := c.nc.Publish("ws.ctl.close.user."+r.URL.Query().Get("user"), nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	c.mux.HandleFunc("POST /control/push", func(w http.ResponseWriter, r *http.Request) {
		data, _ := json.Marshal(map[string]any{"action": "push", "details": r.URL.Query().Get("text")})
		if err := c.nc.Publish("ws.send.user."+r.URL.Query().Get("user"), data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	c.mux.HandleFunc("GET /control/auth-events", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("quiet"))
		n, _ := c.auth.quiet(r.URL.Query().Get("user"), time.Duration(ms)*time.Millisecond)
		fmt.Fprint(w, n)
	})

	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Env = append(os.Environ(),
		"WSGATE_EDGE1="+wsURL(c.edge1Addr),
		"WSGATE_EDGE2="+wsURL(c.edge2Addr),
		"WSGATE_PROXY="+wsURL(c.proxy.addr()),
		"WSGATE_CONTROL="+c.site.URL,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if testing.Verbose() {
		t.Logf("node output:\n%s", out)
	}
}

// nodeMajor returns the major version of the node binary.
func nodeMajor(t *testing.T, node string) int {
	t.Helper()
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	major, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(strings.TrimSpace(string(out)), "v"), ".", 2)[0])
	if err != nil {
		t.Fatalf("node --version printed %q", out)
	}
	return major
}
