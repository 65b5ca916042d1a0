package devstack_test

// createClient({shared: true}) in a real browser: the tabs of one origin
// share one WebSocket through a SharedWorker (issue 21 item 1). The site
// serves the worker script as an application would: the edge's own
// /wsgate-worker.js with the import pointed at the edge (another origin).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// metricTimeout bounds a wait for an edge's connection count; a tab that
// closes without pagehide is only dropped after three missed pings (15 s).
const metricTimeout = 30 * time.Second

// serveWorker adds /wsgate-worker.js to the site: the edge's worker script
// with its import of /client.js made absolute, as the README tells a site
// on another origin than the edge to do.
func (c *cluster) serveWorker(t *testing.T, edgeAddr string) {
	t.Helper()
	resp, err := http.Get("http://" + edgeAddr + "/wsgate-worker.js")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /wsgate-worker.js from the edge: %d, %v", resp.StatusCode, err)
	}
	local := []byte(`importScripts("/client.js");`)
	if !bytes.Contains(body, local) {
		t.Fatalf("the edge's worker script has no %s:\n%s", local, body)
	}
	body = bytes.Replace(body, local, []byte(`importScripts("http://`+edgeAddr+`/client.js");`), 1)
	c.mux.HandleFunc("GET /wsgate-worker.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/javascript; charset=utf-8")
		_, _ = w.Write(body)
	})
}

// connections returns the edge's wsgate_edge_connections{state="authenticated"}.
func connections(t *testing.T, edgeAddr string) int {
	t.Helper()
	resp, err := http.Get("http://" + edgeAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	const sample = `wsgate_edge_connections{state="authenticated"} `
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s%s: %v", sample, v, err)
			}
			return int(n)
		}
	}
	return 0 // no series before the first connection
}

// waitConnections polls the edge until it counts want authenticated connections.
func waitConnections(t *testing.T, edgeAddr string, want int) {
	t.Helper()
	deadline := time.Now().Add(metricTimeout)
	for {
		got := connections(t, edgeAddr)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge counts %d authenticated connections, want %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// closableTab is a tab the test closes itself (Target.closeTarget: the page
// gets pagehide, as when a user closes it).
func (b *browser) closableTab(name string) (*tab, context.CancelFunc) {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	tb := &tab{t: b.t, ctx: ctx, name: name}
	if err := chromedp.Listen(ctx, tb.record); err != nil {
		b.t.Fatalf("%s: %v", name, err)
	}
	return tb, cancel
}

// startShared opens client.html (client.js from edge1) in tb and starts a
// client with options (JSON) plus a recorder of "push" frames (window.pushes)
// and of its events (rec.events, shown when a wait fails).
// noSharedWorker deletes window.SharedWorker first, as in a browser without it.
func (c *cluster) startShared(tb *tab, options map[string]any, noSharedWorker bool) {
	tb.t.Helper()
	tb.navigate(c.site.URL + "/client.html?edge=1")
	tb.waitFor("the client script", `typeof window.wsgate === "object"`)
	js, err := json.Marshal(options)
	if err != nil {
		tb.t.Fatal(err)
	}
	del := ""
	if noSharedWorker {
		del = "delete window.SharedWorker;"
	}
	evalJS[bool](tb, del+`
		window.pushes = [];
		window.client = wsgate.createClient(`+string(js)+`);
		client.on("push", (d) => pushes.push(d));
		["state", "open", "authenticated", "close", "error", "warning"].forEach((name) =>
			client.addListener(name, (d) => rec.events.push({event: name, state: d && d.state, message: d && d.message})));
		true`)
}

// TestBrowser_SharedOneSocketForFiveTabs: five tabs of one user with
// shared: true hold one WebSocket (the edge's count, and one
// Client/authentication event); every tab gets the user's messages; each
// tab's request gets its own reply; closing the tabs one by one keeps the
// others working, and closing the last ends the connection.
func TestBrowser_SharedOneSocketForFiveTabs(t *testing.T) {
	c := startCluster(t)
	c.serveWorker(t, c.edge1Addr)
	b := newBrowser(t)
	opts := map[string]any{"url": wsURL(c.edge1Addr), "token": mintToken("sam", time.Hour), "shared": true}
	tabs := make([]*tab, 5)
	closers := make([]context.CancelFunc, 5)
	for i := range tabs {
		tabs[i], closers[i] = b.closableTab(fmt.Sprintf("tab %d", i))
		c.startShared(tabs[i], opts, false)
	}
	for _, tb := range tabs {
		tb.waitFor("authentication", `client.state === "authenticated"`)
		if got := evalJS[bool](tb, `client.shared`); !got {
			t.Fatalf("%s: client.shared is false: no SharedWorker in this Chromium?", tb.name)
		}
	}
	waitConnections(t, c.edge1Addr, 1)
	c.auth.wait(t, "sam", 1)

	c.push(t, "sam", "push", "to every tab")
	for _, tb := range tabs {
		tb.waitFor("the push", `pushes.length === 1 && pushes[0] === "to every tab"`)
	}

	// All five requests in flight at once; each tab must get its own echo.
	for i, tb := range tabs {
		evalJS[bool](tb, fmt.Sprintf(`window.echo = client.request("echo", "from tab %d"); true`, i))
	}
	for i, tb := range tabs {
		if got, want := evalJS[string](tb, `window.echo`), fmt.Sprintf("from tab %d", i); got != want {
			t.Errorf("%s: its request resolved with %q, want %q", tb.name, got, want)
		}
	}

	for i := range 4 {
		closers[i]()
		rest := tabs[i+1:]
		text := fmt.Sprintf("after closing tab %d", i)
		c.push(t, "sam", "push", text)
		for _, tb := range rest {
			tb.waitFor(text, fmt.Sprintf(`pushes.includes(%q)`, text))
		}
		if got := evalJS[string](rest[0], fmt.Sprintf(`client.request("echo", %q)`, text)); got != text {
			t.Errorf("%s: echo %q after closing tab %d", rest[0].name, got, i)
		}
		if n := connections(t, c.edge1Addr); n != 1 {
			t.Fatalf("after closing tab %d the edge counts %d connections, want 1", i, n)
		}
	}
	closers[4]()
	waitConnections(t, c.edge1Addr, 0)
	if edges, _ := c.auth.get("sam"); len(edges) != 1 {
		t.Errorf("sam authenticated %d times, want once (one shared connection)", len(edges))
	}
}

// TestBrowser_SharedFallbackWithoutSharedWorker: in a browser without
// SharedWorker (deleted from the page's window before createClient),
// shared: true gives each tab its own connection, which works as usual.
func TestBrowser_SharedFallbackWithoutSharedWorker(t *testing.T) {
	c := startCluster(t)
	c.serveWorker(t, c.edge1Addr)
	b := newBrowser(t)
	opts := map[string]any{"url": wsURL(c.edge1Addr), "token": mintToken("fay", time.Hour), "shared": true}
	tabs := make([]*tab, 3)
	for i := range tabs {
		tabs[i] = b.tab(fmt.Sprintf("tab %d", i))
		c.startShared(tabs[i], opts, true)
	}
	for i, tb := range tabs {
		tb.waitFor("authentication", `client.state === "authenticated"`)
		if got := evalJS[bool](tb, `client.shared`); got {
			t.Errorf("%s: client.shared is true without SharedWorker", tb.name)
		}
		want := fmt.Sprintf("tab %d", i)
		if got := evalJS[string](tb, fmt.Sprintf(`client.request("echo", %q)`, want)); got != want {
			t.Errorf("%s: echo %q, want %q", tb.name, got, want)
		}
	}
	waitConnections(t, c.edge1Addr, 3)
	c.push(t, "fay", "push", "to every tab")
	for _, tb := range tabs {
		tb.waitFor("the push", `pushes[0] === "to every tab"`)
	}
}

// TestBrowser_SharedWorkerMissing: a site that does not serve the worker
// script (404) still works: the tab connects itself.
func TestBrowser_SharedWorkerMissing(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	tb := b.tab("page")
	c.startShared(tb, map[string]any{
		"url": wsURL(c.edge1Addr), "token": mintToken("max", time.Hour), "shared": true, "worker": "/no-such-worker.js",
	}, false)
	tb.waitFor("authentication", `client.state === "authenticated"`)
	if got := evalJS[string](tb, `client.request("echo", "alone")`); got != "alone" {
		t.Errorf("echo %q", got)
	}
	if got := evalJS[bool](tb, `client.shared`); got {
		t.Error("client.shared is true though the worker script is missing")
	}
	waitConnections(t, c.edge1Addr, 1)
}

// TestBrowser_SharedDeadTabIsDropped: a tab that dies without pagehide (as
// a crashed or discarded one: no bye, no more pings, its Web Lock released,
// done here from inside the page) is dropped by the real worker, so closing
// the other tab ends the connection, without waiting out the heartbeat.
func TestBrowser_SharedDeadTabIsDropped(t *testing.T) {
	c := startCluster(t)
	c.serveWorker(t, c.edge1Addr)
	b := newBrowser(t)
	opts := map[string]any{"url": wsURL(c.edge1Addr), "token": mintToken("sid", time.Hour), "shared": true}
	dead, _ := b.closableTab("dead tab")
	other, closeOther := b.closableTab("other tab")
	for _, tb := range []*tab{dead, other} {
		c.startShared(tb, opts, false)
		tb.waitFor("authentication", `client.state === "authenticated" && client.shared`)
	}
	waitConnections(t, c.edge1Addr, 1)

	if !evalJS[bool](dead, `typeof client._unlock === "function"`) {
		t.Fatal("the tab holds no Web Lock: no navigator.locks in this Chromium?")
	}
	evalJS[bool](dead, `clearInterval(client._beat); client._port.onmessage = null; client._unlock(); true`)
	closeOther()
	waitConnections(t, c.edge1Addr, 0)
	if edges, _ := c.auth.get("sid"); len(edges) != 1 {
		t.Errorf("sid authenticated %d times, want 1", len(edges))
	}
}
