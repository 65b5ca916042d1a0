package devstack_test

// The JS client's history recovery and reliable sends in a real browser
// (issues 16 and 17, "Browser"): a page reaches edge1 through the proxy (the
// load balancer), edge1 is drained (SIGTERM) or killed (SIGKILL) while
// numbers flow, the balancer moves to edge2, and the page's numbers must
// come through complete, in order and once.

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// browserNumbers is how many numbers each test sends, one every
// browserNumberEvery (about 4 s in all, the edge restart in the middle).
const (
	browserNumbers     = 200
	browserNumberEvery = 20 * time.Millisecond
)

// harnessSite serves the harness pages (testdata/client.html and
// module.html) with the client from the edge at addr, which stays up, and
// returns the site's URL. With ?cookie=<user> a page also sets a token for
// user as the edges' cookie (they share the site's host; cookies do not
// depend on the port).
func harnessSite(t *testing.T, addr string) string {
	t.Helper()
	pages := template.Must(template.ParseFiles("testdata/client.html", "testdata/module.html"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /harness.js", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, "testdata/harness.js")
	})
	mux.HandleFunc("GET /{page}", func(w http.ResponseWriter, r *http.Request) {
		if pages.Lookup(r.PathValue("page")) == nil {
			http.NotFound(w, r)
			return
		}
		data := struct{ ClientJS, ClientMJS, Token string }{"http://" + addr + "/client.js", "http://" + addr + "/client.mjs", ""}
		if user := r.URL.Query().Get("cookie"); user != "" {
			http.SetCookie(w, &http.Cookie{Name: "wsgate_token", Value: mintToken(user, time.Hour), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pages.ExecuteTemplate(w, r.PathValue("page"), data); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	site := httptest.NewServer(mux)
	t.Cleanup(site.Close)
	return site.URL
}

// openHarness opens a harness page, evaluates setup (if any), and starts a
// client with opts (see testdata/harness.js).
func openHarness(tb *tab, url, setup string, opts map[string]any) {
	tb.t.Helper()
	tb.navigate(url)
	tb.waitFor("the client script", `typeof window.wsgate === "object" && typeof window.wsgate.createClient === "function"`)
	if setup != "" {
		evalJS[bool](tb, setup)
	}
	js, err := json.Marshal(opts)
	if err != nil {
		tb.t.Fatal(err)
	}
	evalJS[bool](tb, "startClient("+string(js)+")")
}

// restartEdge takes edge1 out of the balancer: SIGTERM (the edge drains
// with 1012) after the balancer moved to edge2, as a rolling deploy does, or
// SIGKILL before it, as a crash is.
func restartEdge(t *testing.T, edge1 *proc, proxy *tcpProxy, edge2Addr string, kill bool) {
	t.Helper()
	if !kill {
		proxy.setTarget(edge2Addr)
		if err := edge1.stop(t); err != nil {
			t.Fatalf("edge1 exited with %v after SIGTERM", err)
		}
		return
	}
	if err := edge1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = edge1.stop(t) // waits for the exit: "signal: killed"
	proxy.setTarget(edge2Addr)
}

// upTo returns 1, 2, …, n.
func upTo(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i + 1
	}
	return s
}

// Mutation that fails it (every case): the client not sending since on
// reconnects (the numbers published while the page was away are missing,
// and no recovered event). A repeated message would show as the client's
// "ignored a repeated message" warning, which fails it too. With the
// cookie, the edge authenticates the upgrade and recovers before it reads a
// frame: the client's since must be in the URL (fails without it).
func TestBrowser_RecoveryAcrossEdgeRestart(t *testing.T) {
	for _, tt := range []struct {
		name         string
		kill, cookie bool
	}{{"SIGTERM drain", false, false}, {"SIGKILL", true, false}, {"SIGTERM drain, cookie", false, true}} {
		t.Run(tt.name, func(t *testing.T) { testRecoveryAcrossEdgeRestart(t, tt.kill, tt.cookie) })
	}
}

func testRecoveryAcrossEdgeRestart(t *testing.T, kill, cookie bool) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	env := []string{"EDGE_ALLOWED_ORIGINS=*", "WS_HISTORY=memory", "WS_HISTORY_MAX_PER_SUBJECT=1000"}
	edge1, addr1 := startEdgeProc(t, ns.ClientURL(), "edge1", env...)
	_, addr2 := startEdgeProc(t, ns.ClientURL(), "edge2", env...)
	proxy := startProxy(t, addr1)
	tb := newBrowser(t).tab("module page")
	page, opts := "/module.html", map[string]any{"url": wsURL(proxy.addr()), "actions": []string{"n"}}
	if cookie {
		page += "?cookie=rita"
	} else {
		opts["token"] = mintToken("rita", time.Hour)
	}
	openHarness(tb, harnessSite(t, addr2)+page, "", opts)
	tb.waitFor("authentication", `client.state === "authenticated"`)
	evalJS[bool](tb, `window.recovered = []; client.addListener("recovered", (e) => recovered.push(e)); true`)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	published := make(chan error, 1)
	go func() { published <- publishNumbers(ctx, js, "ws.send.user.rita", browserNumbers) }()

	tb.waitFor("the first numbers", `received("n").length >= 40`)
	restartEdge(t, edge1, proxy, addr2, kill)
	tb.waitFor("every number", fmt.Sprintf(`received("n").length >= %d`, browserNumbers))
	if err := <-published; err != nil {
		t.Fatalf("publish: %v", err)
	}

	if got := evalJS[[]int](tb, `received("n")`); !slices.Equal(got, upTo(browserNumbers)) {
		t.Errorf("the page got %v, want 1 to %d in order, once each", got, browserNumbers)
	}
	var recs []struct {
		Recovered bool `json:"recovered"`
		Count     int  `json:"count"`
	}
	if err := json.Unmarshal([]byte(evalJS[string](tb, `JSON.stringify(recovered)`)), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatal("no recovered event")
	}
	for _, r := range recs {
		if !r.Recovered {
			t.Errorf("recovered events %+v, want recovered:true on each", recs)
			break
		}
	}
	if warnings := evalJS[[]string](tb, `rec.events.filter((e) => e.event === "warning").map((e) => e.message)`); len(warnings) > 0 {
		t.Errorf("warnings %q, want none (a repeated message is one)", warnings)
	}
	t.Logf("recovered events %+v, authentications %d", recs, evalJS[int](tb, `count("authenticated")`))
}

// publishNumbers publishes {"action":"n","details":i} for i = 1…n to
// subject through JetStream (each one stored), one every browserNumberEvery.
func publishNumbers(ctx context.Context, js jetstream.JetStream, subject string, n int) error {
	tick := time.NewTicker(browserNumberEvery)
	defer tick.Stop()
	for i := 1; i <= n; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := js.Publish(pctx, subject, fmt.Appendf(nil, `{"action":"n","details":%d}`, i))
		cancel()
		if err != nil {
			return fmt.Errorf("number %d: %w", i, err)
		}
	}
	return nil
}

// lossyAcks makes the page's WebSockets drop the Server/ack frames they get
// while window.dropAcks is true (counted in window.droppedAcks), as a
// connection that breaks after the edge sent them would. The client uses
// the page's WebSocket, and sets its onmessage.
const lossyAcks = `
	window.dropAcks = false; window.droppedAcks = 0;
	window.WebSocket = class extends WebSocket {
		set onmessage(handler) {
			super.onmessage = (ev) => {
				if (window.dropAcks && typeof ev.data === "string" && ev.data.startsWith('["Server/ack",')) {
					window.droppedAcks++;
					return;
				}
				handler(ev);
			};
		}
		get onmessage() { return super.onmessage; }
	};
	true`

// counter is a route backend that counts, per number, the count actions
// ({"n": number}) it handles; it answers 204 (no reply to the client), or
// with replies, ["counted", {"n": number}] to the client (with its ref).
type counter struct {
	srv     *httptest.Server
	replies bool          // static
	delay   time.Duration // static: how long handling a count takes

	mu      sync.Mutex
	handled map[int]int // number → requests
	bad     []string    // requests that were not a count action
}

func newCounter(t *testing.T) *counter { return startCounter(t, false, 0) }

func startCounter(t *testing.T, replies bool, delay time.Duration) *counter {
	t.Helper()
	c := &counter{handled: map[int]int{}, replies: replies, delay: delay}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *counter) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var env wire.Envelope
	var d struct {
		N int `json:"n"`
	}
	c.mu.Lock()
	if json.Unmarshal(body, &env) != nil || json.Unmarshal(env.Details, &d) != nil || d.N == 0 || r.Header.Get("X-Wsgate-Msg-Id") == "" {
		c.bad = append(c.bad, string(body))
	} else {
		c.handled[d.N]++
	}
	c.mu.Unlock()
	time.Sleep(c.delay)
	if c.replies && d.N != 0 {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"action":"counted","details":{"n":%d}}`, d.N)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// snapshot returns a copy of the counts and the bad requests.
func (c *counter) snapshot() (map[int]int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	handled := make(map[int]int, len(c.handled))
	for k, v := range c.handled {
		handled[k] = v
	}
	return handled, slices.Clone(c.bad)
}

// routesFile writes a routes file sending count to c.
func (c *counter) routesFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routes.json")
	data := fmt.Sprintf(`{"routes":[{"action":"count","url":%q,"timeout":"20s"}]}`, c.srv.URL) // under DISPATCHER_ACK_WAIT (30s), as the dispatcher requires
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Ten acks are lost on the way to the page before the restart (lossyAcks):
// their frames are stored, and the page resends them to edge2. Mutations
// that fail it: the client not resending unacknowledged frames after a
// reconnect (never acked, never handled), or the edge's Nats-Msg-Id per
// connection instead of per user (the resends are handled twice, and none
// is acked duplicate:true).
func TestBrowser_ReliableAcrossEdgeRestart(t *testing.T) {
	eachRestart(t, testReliableAcrossEdgeRestart)
}

// eachRestart runs test once with edge1 drained (SIGTERM) and once killed.
func eachRestart(t *testing.T, test func(t *testing.T, kill bool)) {
	for _, tt := range []struct {
		name string
		kill bool
	}{{"SIGTERM drain", false}, {"SIGKILL", true}} {
		t.Run(tt.name, func(t *testing.T) { test(t, tt.kill) })
	}
}

// reliableStage is two edge processes with reliable inbound (and history,
// when asked), a dispatcher routing count to backend, and a classic page of
// user reaching edge1 through a proxy (the balancer), set up with setup and
// authenticated.
type reliableStage struct {
	edge1 *proc
	addr2 string
	proxy *tcpProxy
	st    jetstream.Stream
	tb    *tab
}

func newReliableStage(t *testing.T, history bool, backend *counter, user, setup string) reliableStage {
	t.Helper()
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	env, dispEnv := []string{"EDGE_ALLOWED_ORIGINS=*", "WS_INBOUND=memory"}, []string(nil)
	if history {
		env, dispEnv = append(env, "WS_HISTORY=memory"), []string{"WS_HISTORY=memory"}
	}
	edge1, addr1 := startEdgeProc(t, ns.ClientURL(), "edge1", env...)
	_, addr2 := startEdgeProc(t, ns.ClientURL(), "edge2", env...)
	st := waitStream(t, nc)
	startReliableDispatcher(t, ns.ClientURL(), backend.routesFile(t), dispEnv...)
	proxy := startProxy(t, addr1)
	tb := newBrowser(t).tab("classic page")
	openHarness(tb, harnessSite(t, addr2)+"/client.html", setup, map[string]any{
		"url": wsURL(proxy.addr()), "token": mintToken(user, time.Hour),
	})
	tb.waitFor("authentication", `client.state === "authenticated"`)
	return reliableStage{edge1: edge1, addr2: addr2, proxy: proxy, st: st, tb: tb}
}

func testReliableAcrossEdgeRestart(t *testing.T, kill bool) {
	backend := newCounter(t)
	stage := newReliableStage(t, false, backend, "sam", lossyAcks)
	st, tb := stage.st, stage.tb
	evalJS[bool](tb, fmt.Sprintf(`
		window.acked = []; window.failed = []; window.duplicates = 0;
		client.addListener("acked", (e) => { acked.push(e.details.n); if (e.duplicate) duplicates++; });
		client.addListener("failed", (e) => failed.push(e));
		window.sent = 0;
		window.sender = setInterval(() => {
			if (sent === %d) { clearInterval(sender); return; }
			sent++;
			client.send("count", {n: sent}, {reliable: true});
		}, %d);
		true`, browserNumbers, browserNumberEvery.Milliseconds()))

	tb.waitFor("the first acks", `acked.length >= 40`)
	// The next acks get lost on the way: their frames are stored, but the
	// page does not know it, and resends them after the reconnection.
	evalJS[bool](tb, `window.dropAcks = true`)
	tb.waitFor("lost acks", `droppedAcks >= 10`)
	evalJS[bool](tb, `window.dropAcks = false; true`)
	restartEdge(t, stage.edge1, stage.proxy, stage.addr2, kill)
	tb.waitFor("every ack", fmt.Sprintf(`acked.length >= %d`, browserNumbers))
	acked := evalJS[[]int](tb, `acked`)
	slices.Sort(acked)
	if !slices.Equal(acked, upTo(browserNumbers)) {
		t.Errorf("acked %v, want 1 to %d once each", acked, browserNumbers)
	}
	// Each lost ack was for a stored frame: its resend is a duplicate.
	if dropped, duplicates := evalJS[int](tb, `droppedAcks`), evalJS[int](tb, `duplicates`); duplicates < dropped {
		t.Errorf("%d acks lost before the restart but %d acks with duplicate:true after it", dropped, duplicates)
	}
	if failed := evalJS[string](tb, `JSON.stringify(failed)`); failed != "[]" {
		t.Errorf("failed events %s, want none", failed)
	}

	// Once the work queue holds nothing, no number can be handled again.
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter("ws.inq.count"))
		handled, _ := backend.snapshot()
		if err == nil && info.State.Subjects["ws.inq.count"] == 0 && len(handled) >= browserNumbers {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handled %d of %d numbers (stream: %v)", len(handled), browserNumbers, err)
		}
		<-tick.C
	}
	handled, bad := backend.snapshot()
	if len(bad) > 0 {
		t.Errorf("bad requests to the backend: %q", bad)
	}
	for _, n := range upTo(browserNumbers) {
		if handled[n] != 1 {
			t.Errorf("number %d handled %d times, want once", n, handled[n])
		}
	}
	if len(handled) != browserNumbers {
		t.Errorf("handled %d distinct numbers, want %d", len(handled), browserNumbers)
	}
	t.Logf("authentications %d, acks lost %d, acks with duplicate:true (a resend already stored) %d",
		evalJS[int](tb, `count("authenticated")`), evalJS[int](tb, `droppedAcks`), evalJS[int](tb, `duplicates`))
}

// TestBrowser_ReliableRequestsAcrossEdgeRestart: DESIGN §8's
// request(…, {reliable: true}) through a real edge restart, with history on
// (the reply reaches the user's session even while the page is between two
// edges, and comes back in the recovery). The page makes numbered reliable
// requests while edge1 is drained or killed; every request resolves once,
// with its own number, none is rejected, and each number is handled once.
// Mutations that fail it: the client rejecting a reliable request when its
// connection drops, or the dispatcher replying to the originating
// connection only (the replies to requests handled while the page moved
// never arrive: 408).
func TestBrowser_ReliableRequestsAcrossEdgeRestart(t *testing.T) {
	eachRestart(t, testReliableRequestsAcrossEdgeRestart)
}

func testReliableRequestsAcrossEdgeRestart(t *testing.T, kill bool) {
	const requests, every = 100, 20 * time.Millisecond
	// Handling takes a while, so that some requests are handled after the
	// page left edge1: their replies must find it on edge2.
	backend := startCounter(t, true, 300*time.Millisecond)
	stage := newReliableStage(t, true, backend, "ria", "")
	tb := stage.tb
	evalJS[bool](tb, fmt.Sprintf(`
		window.resolved = []; window.rejected = []; window.recoveries = [];
		client.addListener("recovered", (e) => recoveries.push(e.recovered));
		window.asked = 0;
		window.asker = setInterval(() => {
			if (asked === %d) { clearInterval(asker); return; }
			const n = ++asked;
			client.request("count", {n}, {reliable: true, timeout: 60000}).then(
				(d) => resolved.push([n, d && d.n]),
				(e) => rejected.push([n, e.code, e.message]));
		}, %d);
		true`, requests, every.Milliseconds()))
	tb.waitFor("the first replies", `resolved.length >= 20`)
	restartEdge(t, stage.edge1, stage.proxy, stage.addr2, kill)
	tb.waitFor("every request settled", fmt.Sprintf(`resolved.length + rejected.length >= %d`, requests))
	if rejected := evalJS[string](tb, `JSON.stringify(rejected)`); rejected != "[]" {
		t.Errorf("rejected requests %s, want none", rejected)
	}
	var got [][2]int
	if err := json.Unmarshal([]byte(evalJS[string](tb, `JSON.stringify(resolved)`)), &got); err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for _, r := range got {
		if r[0] != r[1] {
			t.Errorf("request %d resolved with the reply for %d", r[0], r[1])
		}
		seen[r[0]]++
	}
	for _, n := range upTo(requests) {
		if seen[n] != 1 {
			t.Errorf("request %d resolved %d times, want once", n, seen[n])
		}
	}
	edgetest.Eventually(t, "every number handled", func() bool {
		handled, _ := backend.snapshot()
		return len(handled) >= requests
	})
	handled, bad := backend.snapshot()
	if len(bad) > 0 {
		t.Errorf("bad requests to the backend: %q", bad)
	}
	for _, n := range upTo(requests) {
		if handled[n] != 1 {
			t.Errorf("number %d handled %d times, want once", n, handled[n])
		}
	}
	// The reconnection recovered (the replies stored while the page moved
	// came that way).
	if r := evalJS[string](tb, `JSON.stringify(recoveries)`); !strings.HasSuffix(r, "true]") {
		t.Errorf("recovered events %s, want the last one recovered", r)
	}
	t.Logf("authentications %d, recovered events %s", evalJS[int](tb, `count("authenticated")`), evalJS[string](tb, `JSON.stringify(recoveries)`))
}
