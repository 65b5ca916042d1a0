package devstack_test

// The JS client in a real browser: Debian's chromium, driven with chromedp,
// against two edge processes and a dispatcher process on a real NATS server.
// The test pages come from a small site on another port (the edges allow any
// Origin); each page loads /client.js from an edge, as a customer's page
// would. A TCP proxy plays the load balancer for the reconnection test.

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// browserTimeout bounds each browser test, the browser included.
const browserTimeout = 60 * time.Second

// pollTimeout bounds one wait for a page condition.
const pollTimeout = 15 * time.Second

// ---- the cluster the browser and node tests run against --------------------

// cluster is a NATS server, edge1 and edge2 (processes), a dispatcher
// (process), a proxy in front of edge1, and a site serving the test pages.
type cluster struct {
	nc        *nats.Conn
	edge1     *proc
	edge1Addr string // host:port
	edge2Addr string
	proxy     *tcpProxy
	mux       *http.ServeMux // the site's routes; tests may add their own
	site      *httptest.Server
	auth      *lifecycle
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	ns := edgetest.RunNATS(t)
	c := &cluster{nc: edgetest.Connect(t, ns.ClientURL()), mux: http.NewServeMux()}
	c.auth = watchLifecycle(t, c.nc)
	origins := "EDGE_ALLOWED_ORIGINS=*" // the pages come from the site's port
	c.edge1, c.edge1Addr = startEdgeProc(t, ns.ClientURL(), "edge1", origins)
	_, c.edge2Addr = startEdgeProc(t, ns.ClientURL(), "edge2", origins)
	startDispatcher(t, ns.ClientURL())
	c.proxy = startProxy(t, c.edge1Addr)

	pages := template.Must(template.ParseFiles("testdata/seed.html", "testdata/client.html", "testdata/module.html"))
	// GET /token?user=u&ttl=1h mints a token for u, as an application would.
	c.mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		ttl, err := time.ParseDuration(r.URL.Query().Get("ttl"))
		if err != nil {
			ttl = time.Hour
		}
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, mintToken(r.URL.Query().Get("user"), ttl))
	})
	c.mux.HandleFunc("GET /harness.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "testdata/harness.js")
	})
	// GET /seed.html?edge=1&user=u, /client.html?edge=proxy and
	// /module.html?edge=2: the page with /client.js (or /client.mjs) from
	// that edge (1, 2 or proxy) and a token for u. With &cookie=1 the token
	// is also set as the edges' cookie: the edges share the site's host, and
	// cookies do not depend on the port.
	c.mux.HandleFunc("GET /{page}", func(w http.ResponseWriter, r *http.Request) {
		addr := map[string]string{"1": c.edge1Addr, "2": c.edge2Addr, "proxy": c.proxy.addr()}[r.URL.Query().Get("edge")]
		if addr == "" || pages.Lookup(r.PathValue("page")) == nil {
			http.NotFound(w, r)
			return
		}
		data := struct{ ClientJS, ClientMJS, Token string }{
			"http://" + addr + "/client.js", "http://" + addr + "/client.mjs", mintToken(r.URL.Query().Get("user"), time.Hour),
		}
		if r.URL.Query().Get("cookie") == "1" {
			http.SetCookie(w, &http.Cookie{Name: "wsgate_token", Value: data.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pages.ExecuteTemplate(w, r.PathValue("page"), data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	c.site = httptest.NewServer(c.mux)
	t.Cleanup(c.site.Close)
	return c
}

// startEdgeProc is startEdge that also returns the process, to stop it.
func startEdgeProc(t *testing.T, natsURL, id string, env ...string) (*proc, string) {
	t.Helper()
	p := start(t, "edge", append([]string{"NATS_URL=" + natsURL, "EDGE_ADDR=127.0.0.1:0", "EDGE_ID=" + id,
		"EDGE_JWT_SECRET=" + secret, "EDGE_DRAIN_TIMEOUT=200ms"}, env...)...)
	line := p.waitLog(t, "edge listening")
	return p, line["addr"].(string)
}

func wsURL(addr string) string { return "ws://" + addr + "/ws" }

// mintToken signs an HS256 token for user with the edges' secret; safe off
// the test goroutine (the site's handlers use it).
func mintToken(user string, ttl time.Duration) string {
	return mintTokenUntil(user, time.Now().Add(ttl))
}

// mintTokenUntil is mintToken with exp (whole seconds, truncated) given.
func mintTokenUntil(user string, exp time.Time) string {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": user, "exp": exp.Unix(),
	}).SignedString([]byte(secret))
	if err != nil {
		panic(err) // HS256 with a []byte key cannot fail
	}
	return tok
}

// ---- lifecycle events --------------------------------------------------------

// lifecycle records the Client/authentication events the edges publish on
// NATS: one per authenticated connection, never one per token renewal.
type lifecycle struct {
	mu     sync.Mutex
	edges  map[string][]string // user → edge of each event
	change chan struct{}       // closed and replaced at every event
}

func watchLifecycle(t *testing.T, nc *nats.Conn) *lifecycle {
	t.Helper()
	l := &lifecycle{edges: map[string][]string{}, change: make(chan struct{})}
	sub, err := nc.Subscribe("ws.in.Client/authentication", func(m *nats.Msg) {
		var env struct {
			User string `json:"user"`
			Edge string `json:"edge"`
		}
		_ = json.Unmarshal(m.Data, &env)
		l.mu.Lock()
		l.edges[env.User] = append(l.edges[env.User], env.Edge)
		close(l.change)
		l.change = make(chan struct{})
		l.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

func (l *lifecycle) get(user string) ([]string, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.edges[user]), l.change
}

// wait returns the edges of user's events once there are at least n.
func (l *lifecycle) wait(t *testing.T, user string, n int) []string {
	t.Helper()
	timeout := time.After(edgetest.Timeout)
	for {
		edges, change := l.get(user)
		if len(edges) >= n {
			return edges
		}
		select {
		case <-change:
		case <-timeout:
			t.Fatalf("%d Client/authentication events of %s, want %d", len(edges), user, n)
		}
	}
}

// quiet waits d and returns how many events user has, and whether none came
// during d. It is the absence check: "no reconnect within d".
func (l *lifecycle) quiet(user string, d time.Duration) (int, bool) {
	before, change := l.get(user)
	timeout := time.After(d)
	for {
		select {
		case <-change:
			var now []string
			if now, change = l.get(user); len(now) != len(before) {
				return len(now), false
			}
		case <-timeout:
			return len(before), true
		}
	}
}

// ---- the load balancer -------------------------------------------------------

// tcpProxy forwards each connection it accepts to its current target: one
// address for the page, edge1 behind it until the test points it elsewhere.
// A dial that fails closes the accepted connection, as a balancer whose
// backend is down would.
type tcpProxy struct {
	ln     net.Listener
	target atomic.Value // string, host:port
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{} // open connections; nil once closed
}

func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.target.Store(target)
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) addr() string          { return p.ln.Addr().String() }
func (p *tcpProxy) setTarget(addr string) { p.target.Store(addr) }

func (p *tcpProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target.Load().(string), time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); done <- struct{}{} }()
	<-done
	_ = client.Close() // ends the other copy
	_ = server.Close()
	<-done
}

// track registers c, or closes it and reports false once the proxy is closed.
func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *tcpProxy) untrack(c net.Conn) {
	_ = c.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *tcpProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// ---- the browser -------------------------------------------------------------

// need skips the test for a missing tool, or fails it under CI=true, where
// .ci/run installs every tool the tests need. The skip is also recorded for
// make test's closing list (recordSkip).
func need(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: .ci/run should have installed it)", reason)
	}
	recordSkip(t, reason)
	t.Skip("skipped: " + reason)
}

func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	need(t, "no chromium, chromium-browser or google-chrome in PATH (Debian: apt-get install chromium)")
	return ""
}

// browser is one headless Chromium with a fresh profile, stopped (and
// waited for) when the test ends or after browserTimeout.
type browser struct {
	t   *testing.T
	ctx context.Context
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// This machine's network is closed: no background connections.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(allocCancel) // also waits for the browser process
	bctx, bcancel := chromedp.NewContext(allocCtx)
	t.Cleanup(bcancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return &browser{t: t, ctx: bctx}
}

// tab is one page of the browser; its console output and uncaught
// exceptions are logged when the test fails.
type tab struct {
	t    *testing.T
	ctx  context.Context
	name string
	mu   sync.Mutex
	logs []string
}

func (b *browser) tab(name string, opts ...chromedp.ContextOption) *tab {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, opts...)
	b.t.Cleanup(cancel)
	tb := &tab{t: b.t, ctx: ctx, name: name}
	if err := chromedp.Listen(ctx, tb.record); err != nil {
		b.t.Fatalf("%s: %v", name, err)
	}
	b.t.Cleanup(func() {
		if b.t.Failed() {
			tb.mu.Lock()
			defer tb.mu.Unlock()
			b.t.Logf("%s console:\n  %s", name, strings.Join(tb.logs, "\n  "))
		}
	})
	return tb
}

func (tb *tab) record(ev any) {
	var line string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		args := make([]string, len(ev.Args))
		for i, a := range ev.Args {
			args[i] = a.Description
			if len(a.Value) > 0 {
				args[i] = string(a.Value)
			}
		}
		line = fmt.Sprintf("console.%s %s", ev.Type, strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		line = "exception: " + ev.ExceptionDetails.Text
		if ex := ev.ExceptionDetails.Exception; ex != nil {
			line += " " + ex.Description
		}
	default:
		return
	}
	tb.mu.Lock()
	tb.logs = append(tb.logs, line)
	tb.mu.Unlock()
}

func (tb *tab) navigate(url string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.Navigate(url)); err != nil {
		tb.t.Fatalf("%s: navigate %s: %v", tb.name, url, err)
	}
}

// do runs page actions (clicks, typing) and fails the test on error.
func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %v", tb.name, err)
	}
}

// waitFor polls the page until expr is truthy.
func (tb *tab) waitFor(what, expr string) {
	tb.t.Helper()
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(pollTimeout)))
	if err != nil {
		rec, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`JSON.stringify(window.rec || null)`))
		tb.t.Fatalf("%s: waiting for %s (%s): %v\nrecorded: %s", tb.name, what, expr, err, rec)
	}
}

// evalJS evaluates expr in the page, awaiting a promise, and decodes the
// result into T.
func evalJS[T any](tb *tab, expr string) T {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.name, expr, err)
	}
	return v
}

// startClient opens the harness page (client.js from edge) and starts a
// client with opts (see testdata/harness.js).
func (c *cluster) startClient(tb *tab, edge string, opts map[string]any) {
	tb.t.Helper()
	c.startPage(tb, "/client.html?edge="+edge, opts)
}

// startPage opens a harness page (client.html or module.html, with its
// query) and starts a client with opts.
func (c *cluster) startPage(tb *tab, page string, opts map[string]any) {
	tb.t.Helper()
	tb.navigate(c.site.URL + page)
	tb.waitFor("the client script", `typeof window.wsgate === "object" && typeof window.wsgate.createClient === "function"`)
	js, err := json.Marshal(opts)
	if err != nil {
		tb.t.Fatal(err)
	}
	evalJS[bool](tb, "startClient("+string(js)+")")
}

func (c *cluster) push(t *testing.T, user, action string, details any) {
	t.Helper()
	data, _ := json.Marshal(map[string]any{"action": action, "details": details})
	if err := c.nc.Publish("ws.send.user."+user, data); err != nil {
		t.Fatal(err)
	}
}

// jsError is a settled request() promise, as the page reports it.
type jsError struct {
	Name    string `json:"name"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

const settle = `.then((v) => ({name: "resolved", message: JSON.stringify(v)}), (e) => ({name: e.name, code: e.code, message: e.message}))`

// ---- the tests ---------------------------------------------------------------

// TestBrowser_SeedExampleTwoTabsTwoEdges runs the seed module's client
// example unchanged (cs.WebSockets from <script data-cs-compat>) in two tabs
// of one user, on two edges: each tab's alert shows its hello, and tab B
// also gets the hello tab A sent, through the other edge.
func TestBrowser_SeedExampleTwoTabsTwoEdges(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	tabB := b.tab("tab B (edge2)")
	tabB.navigate(c.site.URL + "/seed.html?edge=2&user=alice")
	tabB.waitFor("the alert of tab B", `alerts.length === 1`)
	tabA := b.tab("tab A (edge1)")
	tabA.navigate(c.site.URL + "/seed.html?edge=1&user=alice")
	tabA.waitFor("the alert of tab A", `alerts.length === 1`)
	tabB.waitFor("tab A's hello in tab B", `hellos.length === 2`)

	hello := []string{"Hello, world!"}
	for _, tb := range []*tab{tabA, tabB} {
		if got := evalJS[[]string](tb, `alerts`); !slices.Equal(got, hello) {
			t.Errorf("%s: alerts %q, want %q", tb.name, got, hello)
		}
		if got := evalJS[string](tb, `cs.WebSockets.state`); got != "authenticated" {
			t.Errorf("%s: state %q", tb.name, got)
		}
	}
	if got := evalJS[[]string](tabB, `hellos`); !slices.Equal(got, []string{hello[0], hello[0]}) {
		t.Errorf("tab B got hellos %q, want its own and tab A's", got)
	}
	edges := c.auth.wait(t, "alice", 2)
	slices.Sort(edges)
	if !slices.Equal(edges, []string{"edge1", "edge2"}) {
		t.Errorf("alice's connections were on %q, want one on each edge", edges)
	}
}

// TestBrowser_RequestResolvesAndRejects: request() resolves with the echo,
// rejects with the server's code and message on <action>:error with its ref,
// and with 408 when nobody answers; the seed's error callback gets the
// [code, message] of hello:error spread into arguments.
func TestBrowser_RequestResolvesAndRejects(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	tb := b.tab("page")
	c.startClient(tb, "1", map[string]any{
		"url": wsURL(c.edge1Addr), "token": mintToken("gina", time.Hour), "actions": []string{"hello"},
	})
	tb.waitFor("authentication", `client.state === "authenticated"`)

	echo := evalJS[map[string]any](tb, `client.request("echo", {n: 1, text: "hi"})`)
	if want := map[string]any{"n": 1.0, "text": "hi"}; !reflect.DeepEqual(echo, want) {
		t.Errorf("echo resolved with %v, want %v", echo, want)
	}
	for _, tt := range []struct {
		name, expr string
		want       jsError
	}{
		{"error reply with the ref", `client.request("chat/send", {text: "  "})`, jsError{"WsgateError", 400, "text is empty"}},
		{"no reply", `client.request("nobody/listens", 1, {timeout: 300})`, jsError{"WsgateError", 408, "wsgate: no reply to nobody/listens within 300 ms"}},
	} {
		if got := evalJS[jsError](tb, tt.expr+settle); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}

	evalJS[chromedp.Void](tb, `client.send("hello", "")`)
	tb.waitFor("hello:error", `received("hello:error").length === 1`)
	args := evalJS[[]any](tb, `rec.frames.find((f) => f.action === "hello:error").args`)
	if want := []any{400.0, "No hello message:("}; !reflect.DeepEqual(args, want) {
		t.Errorf("error callback got %v, want %v", args, want)
	}
}

// TestBrowser_ReconnectsToOtherEdgeAndFlushesQueue: the page reaches the
// edges through one address (the proxy). Edge1 is stopped (SIGTERM: its
// clients get 1012); while the page is disconnected it sends two hellos and
// a request; the proxy then routes to edge2, the page reconnects by itself,
// and everything it queued arrives, in order, at another tab of the user.
func TestBrowser_ReconnectsToOtherEdgeAndFlushesQueue(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	witness := edgetest.Dial(t, wsURL(c.edge2Addr), http.Header(bearer(mintToken("carol", time.Hour))))
	witness.ExpectOK()
	tb := b.tab("page")
	c.startClient(tb, "proxy", map[string]any{
		"url": wsURL(c.proxy.addr()), "token": mintToken("carol", time.Hour), "actions": []string{"hello", "push"},
	})
	tb.waitFor("authentication", `client.state === "authenticated"`)

	if err := c.edge1.stop(t); err != nil {
		t.Fatalf("edge1 exited with %v after SIGTERM", err)
	}
	tb.waitFor("close 1012", `rec.events.some((e) => e.event === "close" && e.code === 1012 && e.willReconnect)`)
	state := evalJS[string](tb, `
		client.send("hello", "offline 1");
		client.send("hello", "offline 2");
		window.echo = client.request("echo", "offline 3");
		client.state`)
	if state != "reconnecting" {
		t.Fatalf("state %q while edge1 is gone, want reconnecting", state)
	}
	c.proxy.setTarget(c.edge2Addr)
	tb.waitFor("a second authentication", `count("authenticated") === 2`)
	if got := evalJS[string](tb, `window.echo`); got != "offline 3" {
		t.Errorf("queued request resolved with %q", got)
	}
	// Handlers run concurrently, so the two hellos may come back in either order.
	got := []string{witness.Expect("hello").String(), witness.Expect("hello").String()}
	slices.Sort(got)
	if want := []string{`["hello","offline 1"]`, `["hello","offline 2"]`}; !slices.Equal(got, want) {
		t.Fatalf("the other tab got %s, want %s", got, want)
	}
	tb.waitFor("its own hellos", `received("hello").length === 2`)
	c.push(t, "carol", "push", "after the reconnection")
	tb.waitFor("a push", `received("push")[0] === "after the reconnection"`)
	if edges := c.auth.wait(t, "carol", 3); edges[2] != "edge2" {
		t.Errorf("the page reconnected to %s, want edge2", edges[2])
	}
}

// TestBrowser_CloseByUserStopsReconnecting: ws.ctl.close.user.<id> makes the
// page emit kicked and close {willReconnect: false}, and the page never
// connects again (no Client/authentication event within 20 times its
// largest first reconnect delay).
func TestBrowser_CloseByUserStopsReconnecting(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	tb := b.tab("page")
	c.startClient(tb, "1", map[string]any{
		"url": wsURL(c.edge1Addr), "token": mintToken("dave", time.Hour), "backoffBase": 100,
	})
	tb.waitFor("authentication", `client.state === "authenticated"`)
	c.auth.wait(t, "dave", 1)

	if err := c.nc.Publish("ws.ctl.close.user.dave", nil); err != nil {
		t.Fatal(err)
	}
	tb.waitFor("kicked, then a final close",
		`count("kicked") === 1 && rec.events.some((e) => e.event === "close" && e.code === 1000 && e.willReconnect === false)`)
	if n, quiet := c.auth.quiet("dave", 2*time.Second); !quiet || n != 1 {
		t.Fatalf("the kicked page connected again: %d Client/authentication events", n)
	}
	if got := evalJS[string](tb, `client.state + " " + count("open") + " " + count("reconnecting")`); got != "closed 1 0" {
		t.Errorf("state, opens, reconnects: %q, want closed 1 0", got)
	}
}

// TestBrowser_TokenRenewal runs two pages at once. Erin's token lives 4 s:
// the client renews it on the live connection (at 80 % of its life), so
// there is one connection only, and pushes still arrive after the first
// token's exp. Frank's getToken first returns the same token, so nothing is
// renewed: the edge closes with 4001 at exp, the client gets a fresh token
// and reconnects (a second connection).
func TestBrowser_TokenRenewal(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	erin, frank := b.tab("erin (renews)"), b.tab("frank (expires)")
	erinExp := time.Now().Add(4 * time.Second).Truncate(time.Second)
	erinToken, frankToken := mintTokenUntil("erin", erinExp), mintToken("frank", 3*time.Second)
	c.startClient(erin, "1", map[string]any{
		"url": wsURL(c.edge1Addr), "token": erinToken, "actions": []string{"push"},
		"tokenURL": c.site.URL + "/token?user=erin&ttl=1h",
	})
	c.startClient(frank, "2", map[string]any{
		"url": wsURL(c.edge2Addr), "token": frankToken, "actions": []string{"push"},
		"tokenURL": c.site.URL + "/token?user=frank&ttl=1h", "staleFirst": true,
	})

	frank.waitFor("close 4001", `rec.events.some((e) => e.event === "close" && e.code === 4001 && e.willReconnect)`)
	frank.waitFor("a second authentication", `count("authenticated") === 2`)
	if got := evalJS[int](frank, `rec.tokenCalls`); got != 2 {
		t.Errorf("frank's getToken calls: %d, want 2 (the unchanged renewal, then after 4001)", got)
	}
	c.auth.wait(t, "frank", 2)
	c.push(t, "frank", "push", "after 4001")
	frank.waitFor("a push after the reconnection", `received("push")[0] === "after 4001"`)

	erin.waitFor("the renewal", `rec.tokenCalls === 1`)
	// The edge checks exp every second: 1.5 s after it, an unrenewed
	// connection would be closed already (as frank's was).
	erin.waitFor("1.5 s after the first token's exp", fmt.Sprintf(`Date.now() > %d`, erinExp.Add(1500*time.Millisecond).UnixMilli()))
	c.push(t, "erin", "push", "after exp")
	erin.waitFor("a push after exp", `received("push")[0] === "after exp"`)
	if got := evalJS[string](erin, `count("open") + " " + count("authenticated") + " " + count("close")`); got != "1 1 0" {
		t.Errorf("erin's opens, authentications, closes: %q, want 1 1 0", got)
	}
	if edges, _ := c.auth.get("erin"); len(edges) != 1 {
		t.Errorf("erin has %d Client/authentication events, want 1 (renewed without reconnecting)", len(edges))
	}
}

// TestBrowser_ModuleAuthenticatesByCookie loads the ES module /client.mjs
// from an edge on another port, as a modern page would, and gives the client
// no token: the edge authenticates the upgrade by the cookie the site set,
// and request() works over that connection.
func TestBrowser_ModuleAuthenticatesByCookie(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	tb := b.tab("module page")
	c.startPage(tb, "/module.html?edge=1&user=hana&cookie=1", map[string]any{"url": wsURL(c.edge1Addr)})
	tb.waitFor("authentication by the cookie", `client.state === "authenticated"`)
	if edges := c.auth.wait(t, "hana", 1); edges[0] != "edge1" {
		t.Errorf("hana authenticated on %s, want edge1", edges[0])
	}
	if got := evalJS[string](tb, `client.request("echo", "by cookie")`); got != "by cookie" {
		t.Errorf("echo resolved with %q", got)
	}
	if got := evalJS[[]int](tb, `wsgate.FINAL_CLOSE_CODES`); !slices.Equal(got, []int{4401, 4403}) {
		t.Errorf("the module's FINAL_CLOSE_CODES = %v", got)
	}
	if got := evalJS[string](tb, `client.phase + " " + count("open") + " " + count("authenticated")`); got != "live 1 1" {
		t.Errorf("phase, opens, authentications: %q, want live 1 1", got)
	}
}

// TestBrowser_FrozenTabActsOnResume: a tab waiting out a 60 s reconnect
// delay (edge1 drained; random fixed at 0.999) is frozen as a browser
// freezes a background tab (CDP Page.setWebLifecycleState), while the
// balancer moves to edge2. On resume the client does not wait for its timer,
// which a frozen or throttled tab cannot trust: it reconnects at once. (A
// live socket is no test of this: Chromium drops the WebSockets of a frozen
// page, so the resumed page gets a 1006 close in any case. The page stays
// hidden after the resume, as a resumed background tab is.)
func TestBrowser_FrozenTabActsOnResume(t *testing.T) {
	c := startCluster(t)
	b := newBrowser(t)
	tb := b.tab("module page")
	c.startPage(tb, "/module.html?edge=1", map[string]any{
		"url": wsURL(c.proxy.addr()), "token": mintToken("ivan", time.Hour),
		"backoffBase": 60000, "backoffMax": 60000, "random": 0.999,
	})
	tb.waitFor("authentication", `client.state === "authenticated"`)
	c.auth.wait(t, "ivan", 1)

	if err := c.edge1.stop(t); err != nil {
		t.Fatalf("edge1 exited with %v after SIGTERM", err)
	}
	tb.waitFor("a 60 s reconnect delay", `rec.events.some((e) => e.event === "reconnecting" && e.delay > 50000)`)
	setLifecycle := func(state page.SetWebLifecycleStateState) {
		t.Helper()
		if _, err := chromedp.Call(tb.ctx, page.SetWebLifecycleState, page.SetWebLifecycleStateParams{State: state}); err != nil {
			t.Fatalf("Page.setWebLifecycleState %s: %v", state, err)
		}
	}
	setLifecycle(page.SetWebLifecycleStateStateFrozen)
	c.proxy.setTarget(c.edge2Addr)
	setLifecycle(page.SetWebLifecycleStateStateActive)

	tb.waitFor("a second authentication, long before the timer", `count("authenticated") === 2`)
	if edges := c.auth.wait(t, "ivan", 2); edges[1] != "edge2" {
		t.Errorf("the page reconnected to %s, want edge2", edges[1])
	}
	if got := evalJS[int](tb, `count("reconnecting")`); got != 1 {
		t.Errorf("%d reconnecting events, want 1 (the resume connects without a new delay)", got)
	}
}

// ---- the demo page -----------------------------------------------------------

// TestBrowser_DemoPageTwoUsers signs in to wsgate-dev's demo page as two
// users in two browser contexts (separate cookies and storage): they chat,
// bob sends alice a private message, and alice's hello goes round. The
// screenshot of alice's page is kept (see demoScreenshotPath).
func TestBrowser_DemoPageTwoUsers(t *testing.T) {
	demo := bannerField(t, startWsgateDev(t), `demo page\s+(\S+)`)
	b := newBrowser(t)
	signIn := func(user string) *tab {
		tb := b.tab(user, chromedp.WithNewBrowserContext())
		tb.do(chromedp.EmulateViewport(1280, 800))
		tb.navigate(demo)
		tb.do(
			chromedp.WaitVisible(chromedp.ID("login-user")),
			chromedp.SendKeys(chromedp.ID("login-user"), user),
			chromedp.Click(chromedp.ID("login-btn")),
		)
		tb.waitFor(user+" signed in", `document.body.dataset.state === "authenticated"`)
		return tb
	}
	alice, bob := signIn("alice"), signIn("bob")
	say := func(tb *tab, input, button, text string) {
		t.Helper()
		tb.do(
			chromedp.SendKeys(chromedp.ID(input), text),
			chromedp.Click(chromedp.ID(button)),
		)
	}
	logHas := func(tb *tab, log, text string) {
		t.Helper()
		js, _ := json.Marshal(text)
		tb.waitFor(fmt.Sprintf("%q in #%s", text, log), fmt.Sprintf(`document.getElementById(%q).textContent.includes(%s)`, log, js))
	}

	say(alice, "chat-input", "chat-send", "Hi Bob! Is the new edge up?")
	logHas(bob, "chat-log", "Hi Bob! Is the new edge up?")
	say(bob, "chat-input", "chat-send", "Yes, both edges are serving.")
	logHas(alice, "chat-log", "Yes, both edges are serving.")
	logHas(bob, "chat-log", "Yes, both edges are serving.")

	bob.do(chromedp.SendKeys(chromedp.ID("pm-to"), "alice"))
	say(bob, "pm-input", "pm-send", "Psst: the release is at five.")
	logHas(alice, "pm-log", "bob → you")
	logHas(alice, "pm-log", "Psst: the release is at five.")
	logHas(bob, "pm-log", "you → alice")

	say(alice, "hello-input", "hello-send", "Hello, world!")
	logHas(alice, "hello-log", "Hello, world!")
	alice.do(chromedp.Click(chromedp.ID("hello-send"))) // empty: hello:error
	logHas(alice, "hello-log", "No hello message:(")
	if got := evalJS[string](bob, `document.getElementById("hello-log").textContent`); got != "" {
		t.Errorf("bob's hello log shows alice's hello: %q", got)
	}

	png, err := chromedp.Run(alice.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := demoScreenshotPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("demo page screenshot: %s", path)
}

// demoScreenshotPath is $WSGATE_ARTIFACTS/demo.png, else
// <temp dir>/wsgate-artifacts/demo.png: outside t.TempDir, so that it
// survives the test (docs/demo.png is a copy of it).
func demoScreenshotPath() string {
	if dir := os.Getenv("WSGATE_ARTIFACTS"); dir != "" {
		return filepath.Join(dir, "demo.png")
	}
	return filepath.Join(os.TempDir(), "wsgate-artifacts", "demo.png")
}
