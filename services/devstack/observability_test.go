package devstack_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// metricName matches the wsgate metrics a PromQL expression uses.
var metricName = regexp.MustCompile(`\bwsgate_[a-z0-9_]+`)

// TestObservability_EveryDashboardAndAlertMetricIsServed scrapes a real
// edge and dispatcher, with history, reliable inbound and presence on (real
// NATS with JetStream), after traffic that uses each feature once, and
// checks that every metric the chart's Grafana dashboard and alert rules
// query is in their /metrics: a renamed metric must not leave an empty
// panel or an alert that never fires.
func TestObservability_EveryDashboardAndAlertMetricIsServed(t *testing.T) {
	ns := edgetest.RunNATSWith(t, &natsserver.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := edgetest.Connect(t, ns.ClientURL())
	wsURL := startEdge(t, ns.ClientURL(), "edge1", "EDGE_ALLOWED_ORIGINS=https://app.example",
		"WS_HISTORY=memory", "WS_INBOUND=memory", "WS_PRESENCE=memory")
	edgeURL := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws")
	// A backend that fails every request: the reliable "order" is retried
	// once, then goes to the dead letters.
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "down", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)
	routes := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(routes, []byte(fmt.Sprintf(`{"routes":[{"action":"order","url":%q}]}`, failing.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := start(t, "dispatcher", "NATS_URL="+ns.ClientURL(), "DISPATCHER_ADDR=127.0.0.1:0",
		"WS_INBOUND=memory", "WS_PRESENCE=memory", "DISPATCHER_MAX_DELIVER=2", "DISPATCHER_RETRY_BACKOFF=100ms",
		"DISPATCHER_ROUTES_FILE="+routes, "DISPATCHER_ROUTES_SECRET="+routesSecret)
	dispatcherURL := "http://" + d.waitLog(t, "dispatcher listening")["addr"].(string)
	d.waitLog(t, "dispatcher subscribed")
	dead, err := nc.SubscribeSync("ws.dead.order")
	if err != nil {
		t.Fatal(err)
	}

	// Traffic that makes the histograms and the counters with labels exist:
	// a handled action with its delivery, a close, a failed authentication,
	// a refused upgrade.
	allowed := http.Header(bearer(token(t, "alice")))
	allowed.Set("Origin", "https://app.example")
	c := edgetest.Dial(t, wsURL, allowed)
	c.ExpectOK()
	epoch := recoveryOf(t, c.Expect(wire.ActionRecovery)).Epoch
	c.Send("hello", "hi")
	c.Expect("hello")

	// History: a stored message, then a connection that recovers it (and
	// the stored hello before it), with its duration, and one from another
	// epoch (recovered: false).
	if err := nc.Publish("ws.send.user.alice", []byte(`{"action":"news"}`)); err != nil {
		t.Fatal(err)
	}
	c.Expect("news")
	replay := edgetest.Dial(t, wsURL+"?since="+epoch+":0", allowed)
	replay.ExpectOK()
	r := recoveryOf(t, replay.Expect(wire.ActionRecovery))
	if !r.Recovered || r.Count < 1 {
		t.Fatalf("recovery %+v, want the stored messages", r)
	}
	var last edgetest.Frame
	for range r.Count {
		last = replay.Next()
	}
	if last.Action != "news" {
		t.Fatalf("last replayed frame %s, want the news", last)
	}
	stale := edgetest.Dial(t, wsURL+"?since=another-epoch:1", allowed)
	stale.ExpectOK()
	if r := recoveryOf(t, stale.Expect(wire.ActionRecovery)); r.Recovered {
		t.Fatalf("recovery %+v from another epoch, want recovered: false", r)
	}

	// Rooms and presence: a stored join and leave, a presence request.
	for _, verb := range []string{"join", "leave"} {
		msg, err := nc.Request("ws.ctl."+verb+".user.alice", []byte(`{"groups":["room-1"]}`), edgetest.Timeout)
		if err != nil || !strings.Contains(string(msg.Data), `"ok":true`) {
			t.Fatalf("%s: %v %s", verb, err, msgData(msg))
		}
	}
	edgetest.Eventually(t, "alice online in presence", func() bool {
		msg, err := nc.Request("ws.presence.user.alice", nil, edgetest.Timeout)
		return err == nil && strings.Contains(string(msg.Data), `"online":true`)
	})

	// Reliable inbound: a stored frame whose handler fails until it is a
	// dead letter.
	c.SendRaw([]byte(`["order",{"item":"book"},null,"o-1"]`))
	if id, ack, ok := ackOf(c.Next()); !ok || id != "o-1" || !ack.Durable {
		t.Fatal("no durable ack for o-1")
	}
	if _, err := dead.NextMsg(60 * time.Second); err != nil {
		t.Fatalf("no dead letter for the failing order: %v", err)
	}

	_ = c.WS.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	c.WaitClose()
	bad := edgetest.Dial(t, wsURL, http.Header{"Origin": {"https://app.example"}})
	bad.Send("Client/authentication", map[string]string{"token": "not-a-token"})
	bad.Expect("Client/authentication:error")
	if _, resp, err := edgetest.TryDial(t, wsURL, http.Header{"Origin": {"https://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("upgrade from a refused origin: %v", err)
	}

	var want []string
	for _, f := range []string{"grafana-dashboard.json", "alerts.yaml"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "charts", "wsgate", "files", f))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, metricName.FindAllString(string(raw), -1)...)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if len(want) < 30 {
		t.Fatalf("only %d metrics found in the dashboard and alerts: %v", len(want), want)
	}

	edgetest.Eventually(t, "every dashboard and alert metric served", func() bool {
		served := scrape(t, edgeURL)
		for name := range scrape(t, dispatcherURL) {
			served[name] = true
		}
		var missing []string
		for _, name := range want {
			if !served[name] {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			t.Logf("not served (yet): %v", missing)
		}
		return len(missing) == 0
	})
}

// scrape returns the names of the series in base's /metrics.
func scrape(t *testing.T, base string) map[string]bool {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return names
}

// recoveryOf decodes a Server/recovery frame.
func recoveryOf(t *testing.T, f edgetest.Frame) wire.Recovery {
	t.Helper()
	var r wire.Recovery
	if err := json.Unmarshal(f.Details, &r); err != nil {
		t.Fatalf("recovery %s: %v", f, err)
	}
	return r
}

// msgData is a reply's payload, or nothing when there was no reply.
func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}
