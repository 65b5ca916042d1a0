package service_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/service"
)

const apiKey = "service-test-key-0123456789"

// request makes a request and returns the status and body.
func request(t *testing.T, method, url, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

func TestRunServesTheSendAPIWhenKeysAreSet(t *testing.T) {
	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	capture := natstest.Subscribe(t, edge, "")
	cfg := testConfig(srv.ClientURL())
	cfg.APIKeys = "other-key-0123456789ab, " + apiKey
	r := run(t, cfg)
	waitStatus(t, r.base+"/readyz", http.StatusOK)

	code, body := request(t, http.MethodPost, r.base+"/v1/send", apiKey,
		`{"target":"user","ids":["42","43"],"action":"invoice/ready","details":{"id":"INV-7"}}`)
	if code != http.StatusAccepted || strings.TrimSpace(body) != `{"status":"accepted"}` {
		t.Fatalf("POST /v1/send: %d %s", code, body)
	}
	for _, want := range []string{"ws.send.user.42", "ws.send.user.43"} {
		if m := capture.Next(t); m.Subject != want || m.Outbound.Action != "invoice/ready" {
			t.Fatalf("got %s on %s, want invoice/ready on %s", m.Data, m.Subject, want)
		}
	}
	code, body = request(t, http.MethodPost, r.base+"/v1/close", apiKey, `{"target":"session","id":"s1"}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /v1/close: %d %s", code, body)
	}
	if m := capture.Next(t); m.Subject != "ws.ctl.close.session.s1" {
		t.Fatalf("close on %s", m.Subject)
	}
	for _, tt := range []struct{ method, path, key string }{
		{http.MethodPost, "/v1/send", ""},
		{http.MethodPost, "/v1/close", "wrong-key-0123456789abc"},
		{http.MethodGet, "/v1/routes", ""},
	} {
		if code, body := request(t, tt.method, r.base+tt.path, tt.key, `{}`); code != http.StatusUnauthorized {
			t.Errorf("%s %s with key %q: %d %s, want 401", tt.method, tt.path, tt.key, code, body)
		}
	}
	if code, body := request(t, http.MethodGet, r.base+"/v1/routes", apiKey, ""); code != http.StatusOK || strings.TrimSpace(body) != `{"routes":[]}` {
		t.Fatalf("GET /v1/routes: %d %s", code, body)
	}
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		_, body := get(t, r.base+"/metrics")
		for _, want := range []string{
			`wsgate_dispatcher_api_requests_total{code="202",path="/v1/send"} 1`,
			`wsgate_dispatcher_api_requests_total{code="401",path="/v1/send"} 1`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %s:\n%s", want, body)
			}
		}
		return nil
	})
}

func TestRunWithoutKeysDoesNotMountTheSendAPI(t *testing.T) {
	srv := natstest.RunServer(t)
	r := run(t, testConfig(srv.ClientURL()))
	for _, path := range []string{"/v1/send", "/v1/close"} {
		if code, body := request(t, http.MethodPost, r.base+path, apiKey, `{"target":"all","action":"a"}`); code != http.StatusNotFound {
			t.Errorf("POST %s: %d %s, want 404", path, code, body)
		}
	}
	// The route table is open then, like /metrics.
	if code, body := request(t, http.MethodGet, r.base+"/v1/routes", "", ""); code != http.StatusOK || strings.TrimSpace(body) != `{"routes":[]}` {
		t.Fatalf("GET /v1/routes: %d %s", code, body)
	}
	if code, _ := request(t, http.MethodPost, r.base+"/v1/routes", "", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/routes: %d, want 405", code)
	}
}

func TestRunRoutesFileTakesOverHelloFromTheBuiltIn(t *testing.T) {
	const secret = "routes-secret-0123456789"
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env wire.Envelope
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil || r.Header.Get("X-Wsgate-Signature") == "" {
			http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"action":"hello","details":"from the backend to %s"}`, env.User)
	}))
	t.Cleanup(backend.Close)
	path := filepath.Join(t.TempDir(), "routes.yaml")
	file := "routes:\n  - action: hello\n    url: " + backend.URL + "/ws/hello\n    timeout: 2s\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}

	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	dnc := natstest.Connect(t, srv)
	capture := natstest.Subscribe(t, edge, "")
	cfg := testConfig(srv.ClientURL())
	cfg.RoutesFile, cfg.RoutesSecret = path, secret
	r := run(t, cfg, service.WithConn(dnc))
	waitStatus(t, r.base+"/readyz", http.StatusOK)

	env := natstest.Envelope("hello", "hi")
	natstest.Publish(t, edge, "", env)
	m := capture.Next(t)
	if m.Subject != "ws.send.conn."+natstest.Connection || m.Outbound.Action != "hello" ||
		string(m.Outbound.Details) != `"from the backend to u1"` || string(m.Outbound.Ref) != string(env.Ref) {
		t.Fatalf("got %s on %s, want the backend's reply with ref %s", m.Data, m.Subject, env.Ref)
	}
	// The built-in echo still answers; the built-in hello did not.
	natstest.Publish(t, edge, "", natstest.Envelope("echo", 1))
	if m := capture.Next(t); m.Outbound.Action != "echo" {
		t.Fatalf("got %s, want echo (the built-in hello answered too?)", m.Data)
	}
	capture.Quiet(t, dnc)

	code, body := request(t, http.MethodGet, r.base+"/v1/routes", "", "")
	want := fmt.Sprintf(`{"file":%q,"routes":[{"action":"hello","url":%q,"timeout":"2s","retries":0,"idempotent":false}]}`,
		path, backend.URL+"/ws/hello")
	if code != http.StatusOK || strings.TrimSpace(body) != want {
		t.Fatalf("GET /v1/routes: %d\n%s\nwant\n%s", code, body, want)
	}
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		_, body := get(t, r.base+"/metrics")
		for _, want := range []string{
			`wsgate_dispatcher_route_requests_total{result="2xx",route="hello"} 1`,
			`wsgate_dispatcher_messages_total{action="hello",outcome="ok"} 1`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %s:\n%s", want, body)
			}
		}
		return nil
	})
}

// TestRunRefusesARouteSlowerThanTheAckWait: with reliable inbound on, a
// route whose backend may take DISPATCHER_ACK_WAIT would have its action
// delivered again while the first request still ran, and a route that is not
// idempotent is never to be sent twice (README). Such a routes file stops
// the start (TestFitsAckWait in routes has the bound).
func TestRunRefusesARouteSlowerThanTheAckWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(path, []byte(`{"routes":[{"action":"a","url":"http://app/a"},{"action":"pay","url":"http://app/pay","timeout":"30s"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("nats://127.0.0.1:1") // never reached: the file is checked first
	cfg.RoutesFile, cfg.RoutesSecret = path, "routes-secret-0123456789"
	cfg.Inbound, cfg.InboundStream, cfg.MaxDeliver, cfg.RetryBackoff, cfg.AckWait = "memory", "WS_INBOUND", 5, "1s", 30*time.Second
	cfg.PrefixConsumersMax = 1000
	err := service.Run(t.Context(), cfg, nil)
	want := "DISPATCHER_ROUTES_FILE: route pay: timeout 30s is not shorter than DISPATCHER_ACK_WAIT (30s): a reliable action would be delivered again while its backend still worked on it; lower the timeout or raise DISPATCHER_ACK_WAIT"
	if err == nil || err.Error() != want {
		t.Fatalf("Run: %v\nwant %s", err, want)
	}
}

func TestRunRefusesABadRoutesFileNamingItsRoute(t *testing.T) {
	path := filepath.Join(t.TempDir(), "routes.json")
	if err := os.WriteFile(path, []byte(`{"routes":[{"action":"a","url":"http://app/a"},{"prefix":"b/","url":"ftp://b"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("nats://127.0.0.1:1") // never reached: the file is read first
	cfg.RoutesFile, cfg.RoutesSecret = path, "routes-secret-0123456789"
	err := service.Run(t.Context(), cfg, nil)
	want := "DISPATCHER_ROUTES_FILE: " + path + `: routes[1].url: want an http:// or https:// URL, not scheme "ftp"`
	if err == nil || err.Error() != want {
		t.Fatalf("Run: %v\nwant %s", err, want)
	}
}
