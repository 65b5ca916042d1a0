package devstack_test

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// metricName matches the wsgate metrics a PromQL expression uses.
var metricName = regexp.MustCompile(`\bwsgate_[a-z0-9_]+`)

// TestObservability_EveryDashboardAndAlertMetricIsServed scrapes a real
// edge and dispatcher after some traffic and checks that every metric the
// chart's Grafana dashboard and alert rules query is in their /metrics: a
// renamed metric must not leave an empty panel or an alert that never fires.
func TestObservability_EveryDashboardAndAlertMetricIsServed(t *testing.T) {
	ns := edgetest.RunNATS(t)
	wsURL := startEdge(t, ns.ClientURL(), "edge1", "EDGE_ALLOWED_ORIGINS=https://app.example")
	edgeURL := "http://" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws://"), "/ws")
	d := start(t, "dispatcher", "NATS_URL="+ns.ClientURL(), "DISPATCHER_ADDR=127.0.0.1:0")
	dispatcherURL := "http://" + d.waitLog(t, "dispatcher listening")["addr"].(string)
	d.waitLog(t, "dispatcher subscribed")

	// Traffic that makes the histograms and the counters with labels exist:
	// a handled action with its delivery, a close, a failed authentication,
	// a refused upgrade.
	allowed := http.Header(bearer(token(t, "alice")))
	allowed.Set("Origin", "https://app.example")
	c := edgetest.Dial(t, wsURL, allowed)
	c.ExpectOK()
	c.Send("hello", "hi")
	c.Expect("hello")
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
	if len(want) < 10 {
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
