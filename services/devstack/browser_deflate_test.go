package devstack_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// deflatePage opens a browser WebSocket to the edge at {{url}}, records the
// extensions the browser negotiated and every message, and authenticates
// with the token in the first frame.
const deflatePage = `<!doctype html><meta charset="utf-8"><title>deflate</title><script>
window.rec = {ext: null, msgs: [], closed: 0};
const ws = new WebSocket(%q);
ws.onopen = () => { rec.ext = ws.extensions; ws.send(JSON.stringify(["Client/authentication", {token: %q}])); };
ws.onmessage = (e) => rec.msgs.push(e.data);
ws.onclose = (e) => { rec.closed = e.code; };
window.sendEcho = (details) => ws.send(JSON.stringify(["echo", details]));
</script>`

// TestBrowser_PermessageDeflate: headless Chromium offers permessage-deflate
// (with client_max_window_bits, keeping its context); an edge process with
// EDGE_COMPRESSION=on accepts it (the page sees the extension, the edge
// counts the connection), Chromium inflates the edge's compressed messages
// — large and small, pushed and echoed — and the edge inflates Chromium's
// compressed messages, two similar ones in a row so that the second leans on
// the first through the shared window.
func TestBrowser_PermessageDeflate(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	_, addr := startEdgeProc(t, ns.ClientURL(), "zedge", "EDGE_ALLOWED_ORIGINS=*", "EDGE_COMPRESSION=on")
	echo, err := nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		var env wire.Envelope
		if json.Unmarshal(m.Data, &env) != nil {
			return
		}
		_ = nc.Publish("ws.send.conn."+env.Connection, wire.AppendOutbound(nil, &wire.Outbound{Action: "echo", Details: env.Details}))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = fmt.Fprintf(w, deflatePage, wsURL(addr), mintToken("zoe", time.Hour))
	}))
	t.Cleanup(site.Close)

	b := newBrowser(t)
	tb := b.tab("page")
	tb.navigate(site.URL)
	tb.waitFor("authentication", `rec.msgs.length === 1`)
	ext := evalJS[string](tb, `rec.ext`)
	if !strings.HasPrefix(ext, "permessage-deflate") || !strings.Contains(ext, "server_no_context_takeover") {
		t.Fatalf("the browser negotiated %q, want permessage-deflate", ext)
	}
	t.Logf("negotiated: %s", ext)
	if got := scrapeSum(t, "http://"+addr, "wsgate_edge_connections_compressed_total"); got != 1 {
		t.Errorf("wsgate_edge_connections_compressed_total = %v, want 1", got)
	}

	var items []string
	for i := range 40 {
		items = append(items, fmt.Sprintf(`{"id":%d,"user":"user-%d","text":"message number %d"}`, i, i%5, i))
	}
	big := json.RawMessage(`[` + strings.Join(items, ",") + `]`)
	small := json.RawMessage(`{"n":1}`)
	want := []string{`["Client/authentication","ok"]`}
	for _, d := range []json.RawMessage{big, small} {
		data := wire.AppendOutbound(nil, &wire.Outbound{Action: "push", Details: d})
		if err := nc.Publish("ws.send.user.zoe", data); err != nil {
			t.Fatal(err)
		}
		want = append(want, string(wire.AppendServerFrame(nil, "push", d, nil)))
	}
	tb.waitFor("the pushes", `rec.msgs.length === 3`)
	for i := range 2 {
		text := strings.Repeat("the same words again and again, ", 20) + strconv.Itoa(i)
		evalJS[bool](tb, `sendEcho(`+strconv.Quote(text)+`), true`)
		want = append(want, string(wire.AppendServerFrame(nil, "echo", json.RawMessage(strconv.Quote(text)), nil)))
		tb.waitFor("echo "+strconv.Itoa(i), `rec.msgs.length === `+strconv.Itoa(4+i))
	}
	got := evalJS[[]string](tb, `rec.msgs`)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("the page got\n%q\nwant\n%q", got, want)
	}
	if closed := evalJS[int](tb, `rec.closed`); closed != 0 {
		t.Errorf("the connection closed with %d", closed)
	}
	// The big push and both echoes were compressed; the small push was not.
	if n := scrapeSum(t, "http://"+addr, "wsgate_edge_deliveries_compressed_total"); n != 3 {
		t.Errorf("wsgate_edge_deliveries_compressed_total = %v, want 3", n)
	}
}

// scrapeSum adds up the samples of the metric name in base's /metrics.
func scrapeSum(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		if v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}
