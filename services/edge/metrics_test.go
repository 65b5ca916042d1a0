package edge_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestMetrics_EdgeExposesWhatItDoes: /metrics of a running edge has every
// metric issue #4 lists, and the ones this test drives move: connections by
// state, frames and bytes by direction, the delivery latency histogram,
// closes by code, auth failures by reason; plus Go runtime and process
// metrics.
func TestMetrics_EdgeExposesWhatItDoes(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_ALLOW_ANONYMOUS": "true"})
	nc := edgetest.Connect(t, ns.ClientURL())

	alice := e.dial(t, map[string]any{"sub": "alice"})
	anon := edgetest.Dial(t, e.URL, nil)
	anon.Send("Client/authentication", nil)
	anon.ExpectOK()
	edgetest.Eventually(t, "connections by state", func() bool {
		return e.metric(t, `wsgate_edge_connections{state="authenticated"}`) == "1" &&
			e.metric(t, `wsgate_edge_connections{state="anonymous"}`) == "1"
	})

	alice.Send("Client/ping", nil)
	alice.Expect("Server/pong")
	publish(t, nc, "ws.send.user.alice", `{"action":"note","details":"hi"}`)
	alice.Expect("note")

	bad := edgetest.Dial(t, e.URL, bearer("not-a-token"))
	if code, _ := bad.WaitClose(); code != 4401 {
		t.Fatalf("bad token closed %d, want 4401", code)
	}
	_ = anon.WS.WriteMessage(8, []byte{0x03, 0xE8}) // close 1000
	<-anon.Done()

	edgetest.Eventually(t, "metrics moved", func() bool {
		return e.metricSum(t, `wsgate_edge_frames_total{direction="in"}`) >= 2 &&
			e.metricSum(t, `wsgate_edge_frames_total{direction="out"}`) >= 4 &&
			e.metricSum(t, `wsgate_edge_bytes_total{direction="in"}`) > 0 &&
			e.metricSum(t, `wsgate_edge_bytes_total{direction="out"}`) > 0 &&
			e.metricSum(t, "wsgate_edge_delivery_latency_seconds_count") >= 1 &&
			e.metric(t, `wsgate_edge_delivery_latency_seconds_bucket{le="+Inf"}`) == e.metric(t, "wsgate_edge_delivery_latency_seconds_count") &&
			e.metric(t, `wsgate_edge_closes_total{code="4401"}`) == "1" &&
			e.metric(t, `wsgate_edge_closes_total{code="1000"}`) == "1" &&
			e.metricSum(t, "wsgate_edge_auth_failures_total") == 1 &&
			e.metric(t, `wsgate_edge_connections{state="anonymous"}`) == "0"
	})
	body := e.body(t, "/metrics")
	for _, name := range []string{
		"wsgate_edge_nats_publish_errors_total", "wsgate_edge_slow_consumer_closes_total",
		"wsgate_edge_nats_reconnects_total", "wsgate_edge_subscriptions",
		"go_goroutines", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_open_fds",
	} {
		if !containsMetric(body, name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	if e.status("/metrics") != http.StatusOK {
		t.Fatal("/metrics not 200")
	}
	if v, _ := strconv.ParseFloat(e.metric(t, "process_open_fds"), 64); v <= 0 {
		t.Errorf("process_open_fds %v", v)
	}
}

// containsMetric reports whether a Prometheus text body has a sample of name.
func containsMetric(body, name string) bool {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && rest != "" && (rest[0] == ' ' || rest[0] == '{') {
			return true
		}
	}
	return false
}
