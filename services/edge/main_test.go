package edge_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const secret = "test-secret-0123456789"

// testEdge is one edge running in-process against a real NATS server.
type testEdge struct {
	srv  *edge.Server
	URL  string // ws://.../ws
	HTTP string // http://...
	stop func() // stops the edge and waits for it; idempotent
}

// startEdge runs an edge whose configuration is the defaults plus env and
// waits until it is ready.
func startEdge(t *testing.T, ns *natsserver.Server, env map[string]string) *testEdge {
	t.Helper()
	e := launchEdge(t, ns.ClientURL(), env)
	edgetest.Eventually(t, "edge ready", func() bool { return e.status("/readyz") == http.StatusOK })
	return e
}

// launchEdge is startEdge against natsURL without waiting for readiness
// (NATS may not be there yet).
func launchEdge(t *testing.T, natsURL string, env map[string]string) *testEdge {
	t.Helper()
	base := map[string]string{
		"NATS_URL": natsURL, "EDGE_ADDR": "127.0.0.1:0", "EDGE_JWT_SECRET": secret,
		"LOG_LEVEL": "error", "EDGE_DRAIN_TIMEOUT": "200ms",
	}
	for k, v := range env {
		base[k] = v
	}
	for k, v := range base {
		t.Setenv(k, v)
	}
	cfg, err := edge.LoadConfig()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := edge.New(cfg, nil)
	if err != nil {
		t.Fatalf("edge: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("edge serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	addr := srv.Addr().String()
	return &testEdge{srv: srv, URL: "ws://" + addr + cfg.Path, HTTP: "http://" + addr, stop: stop}
}

func (e *testEdge) status(path string) int {
	resp, err := http.Get(e.HTTP + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (e *testEdge) body(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(e.HTTP + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric returns the value of one sample line of /metrics ("name{labels}").
func (e *testEdge) metric(t *testing.T, sample string) string {
	t.Helper()
	for _, line := range strings.Split(e.body(t, "/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

// dial connects with a token for claims in the Authorization header and
// expects the unprompted ok.
func (e *testEdge) dial(t *testing.T, claims map[string]any) *edgetest.Client {
	t.Helper()
	c := edgetest.Dial(t, e.URL, bearer(token(t, claims)))
	c.ExpectOK()
	return c
}

func token(t *testing.T, claims map[string]any) string {
	t.Helper()
	return edgetest.Token(t, secret, claims)
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// metricSum adds up every sample of the metric name, whatever its labels.
func (e *testEdge) metricSum(t *testing.T, name string) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(e.body(t, "/metrics"), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest == "" || (rest[0] != ' ' && rest[0] != '{')) {
			continue
		}
		if v, err := strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// subscribe subscribes synchronously and waits until the server has the
// subscription, so that nothing published afterwards is missed.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *nats.Subscription {
	t.Helper()
	sub, err := nc.SubscribeSync(subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// waitSubs waits until the NATS server holds n subscriptions matching subject.
func waitSubs(t *testing.T, ns *natsserver.Server, subject string, n int) {
	t.Helper()
	edgetest.Eventually(t, fmt.Sprintf("%d subscriptions on %s", n, subject), func() bool {
		sz, err := ns.Subsz(&natsserver.SubszOptions{Subscriptions: true, Test: subject})
		return err == nil && sz.Total == n
	})
}
