package service_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/service"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig is a valid configuration against natsURL, on a free port.
func testConfig(natsURL string) service.Config {
	var cfg service.Config
	cfg.URL = natsURL
	cfg.Level, cfg.Format = "debug", "text"
	cfg.Prefix = "ws"
	cfg.Addr = "127.0.0.1:0"
	cfg.Queue = "wsgate-dispatcher"
	cfg.Concurrency = 8
	cfg.APIMaxBody = 1 << 20
	return cfg
}

// running is a service.Run in progress.
type running struct {
	base   string // http://host:port
	cancel context.CancelFunc
	done   chan error // receives Run's result

	returned bool // owned by the test goroutine, like err
	err      error
}

// wait waits for Run to return and returns its error; later calls return it
// again.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	if !r.returned {
		select {
		case r.err = <-r.done:
			r.returned = true
		case <-time.After(natstest.Wait):
			t.Fatal("Run did not return")
		}
	}
	return r.err
}

// run starts service.Run, logging nowhere, and waits until it listens.
func run(t *testing.T, cfg service.Config, opts ...service.Option) *running {
	t.Helper()
	return runLogged(t, cfg, nil, opts...)
}

// runLogged starts service.Run with log and waits until it listens.
func runLogged(t *testing.T, cfg service.Config, log *slog.Logger, opts ...service.Option) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	r := &running{cancel: cancel, done: make(chan error, 1)}
	opts = append(opts, service.OnListen(func(a net.Addr) { addrs <- a }))
	go func() { r.done <- service.Run(ctx, cfg, log, opts...) }()
	t.Cleanup(func() {
		cancel()
		_ = r.wait(t)
	})
	select {
	case a := <-addrs:
		r.base = "http://" + a.String()
	case r.err = <-r.done:
		r.returned = true
		t.Fatalf("Run returned early: %v", r.err)
	case <-time.After(natstest.Wait):
		t.Fatal("Run did not listen")
	}
	return r
}

// get returns the status and body of GET base+path.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		if code, body := get(t, url); code != want {
			return fmt.Errorf("GET %s: %d %q, want %d", url, code, body, want)
		}
		return nil
	})
}

func TestRunServesHandlersProbesAndMetricsThenDrains(t *testing.T) {
	srv := natstest.RunServer(t)
	edge := natstest.Connect(t, srv)
	capture := natstest.Subscribe(t, edge, "")

	release := make(chan struct{})
	started := make(chan struct{})
	blocking := func(d *dispatcher.Dispatcher) error {
		return d.Handle("test/block", func(context.Context, *dispatcher.Message) error {
			close(started)
			<-release
			return nil
		})
	}
	r := run(t, testConfig(srv.ClientURL()), service.WithHandlers(blocking))

	if code, body := get(t, r.base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	waitStatus(t, r.base+"/readyz", http.StatusOK)

	// A built-in handler answers, and the metrics count it.
	natstest.Publish(t, edge, "", natstest.Envelope("echo", "ping"))
	if m := capture.Next(t); m.Outbound.Action != "echo" || string(m.Outbound.Details) != `"ping"` {
		t.Fatalf("echo reply %s", m.Data)
	}
	natstest.CheckFor(t, natstest.Wait, 10*time.Millisecond, func() error {
		_, body := get(t, r.base+"/metrics")
		for _, want := range []string{
			`wsgate_dispatcher_messages_total{action="echo",outcome="ok"} 1`,
			`wsgate_dispatcher_handler_duration_seconds_bucket{action="echo",le="+Inf"} 1`,
			`wsgate_dispatcher_messages_total{action="hello",outcome="error"} 0`,
			`wsgate_dispatcher_decode_errors_total 0`,
		} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %s:\n%s", want, body)
			}
		}
		return nil
	})

	// A handler in flight holds the drain; readiness is off meanwhile.
	natstest.Publish(t, edge, "", natstest.Envelope("test/block", nil))
	<-started
	r.cancel()
	waitStatus(t, r.base+"/readyz", http.StatusServiceUnavailable)
	select {
	case r.err = <-r.done:
		r.returned = true
		t.Fatalf("Run returned (%v) while a handler was in flight", r.err)
	default:
	}
	close(release)
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestRunWithConnLeavesTheConnectionOpen(t *testing.T) {
	srv := natstest.RunServer(t)
	nc := natstest.Connect(t, srv)
	edge := natstest.Connect(t, srv)
	capture := natstest.Subscribe(t, edge, "")
	// NATS_URL points nowhere: only the given connection may be used.
	r := run(t, testConfig("nats://127.0.0.1:1"), service.WithConn(nc))
	waitStatus(t, r.base+"/readyz", http.StatusOK)
	natstest.Publish(t, edge, "", natstest.Envelope("hello", "hi"))
	if m := capture.Next(t); m.Subject != "ws.send.user.u1" || m.Outbound.Action != "hello" {
		t.Fatalf("hello reply %s on %s", m.Data, m.Subject)
	}
	r.cancel()
	if err := r.wait(t); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !nc.IsConnected() {
		t.Fatal("Run closed the connection it was given")
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name   string
		change func(*service.Config)
		want   string
	}{
		{"zero concurrency", func(c *service.Config) { c.Concurrency = 0 }, "DISPATCHER_CONCURRENCY"},
		{"queue with space", func(c *service.Config) { c.Queue = "a b" }, "DISPATCHER_QUEUE"},
		{"prefix wildcard", func(c *service.Config) { c.Prefix = "ws.>" }, "WS_SUBJECT_PREFIX"},
		{"empty addr", func(c *service.Config) { c.Addr = "" }, "DISPATCHER_ADDR"},
		{"bad log level", func(c *service.Config) { c.Level = "loud" }, "LOG_LEVEL"},
		{"bad nats url", func(c *service.Config) { c.URL = "nats://[::1" }, "NATS_URL"},
		{"short api key", func(c *service.Config) { c.APIKeys = "0123456789abcdef,short" }, "DISPATCHER_API_KEYS: key 2 is shorter than 16"},
		{"api keys only commas", func(c *service.Config) { c.APIKeys = " , " }, "DISPATCHER_API_KEYS"},
		{"negative max body", func(c *service.Config) { c.APIMaxBody = -1 }, "DISPATCHER_API_MAX_BODY"},
		{"routes without secret", func(c *service.Config) { c.RoutesFile = "routes.yaml" }, "DISPATCHER_ROUTES_SECRET: required"},
		{"short routes secret", func(c *service.Config) { c.RoutesFile, c.RoutesSecret = "routes.yaml", "short" }, "DISPATCHER_ROUTES_SECRET"},
		{"missing routes file", func(c *service.Config) {
			c.RoutesFile, c.RoutesSecret = "/nonexistent/routes.yaml", "0123456789abcdef"
		}, "DISPATCHER_ROUTES_FILE: read routes: open /nonexistent/routes.yaml"},
		{"addr in use", nil, "DISPATCHER_ADDR"},
	}
	srv := natstest.RunServer(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(srv.ClientURL())
			if tt.change != nil {
				tt.change(&cfg)
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				cfg.Addr = ln.Addr().String()
			}
			err := service.Run(t.Context(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run: got %v, want an error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestLoadConfigNamesTheBadVariable(t *testing.T) {
	tests := []struct{ env, value string }{
		{"DISPATCHER_CONCURRENCY", "abc"},
		{"DISPATCHER_CONCURRENCY", "0"},
		{"DISPATCHER_QUEUE", "a*"},
		{"WS_SUBJECT_PREFIX", "ws..x"},
		{"LOG_FORMAT", "xml"},
		{"DISPATCHER_API_MAX_BODY", "1MB"},
		{"DISPATCHER_API_KEYS", "too-short"},
	}
	for _, tt := range tests {
		t.Run(tt.env+"="+tt.value, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			_, err := service.LoadConfig()
			if err == nil || !strings.HasPrefix(err.Error(), tt.env+":") {
				t.Fatalf("LoadConfig: got %v, want an error starting with %s:", err, tt.env)
			}
		})
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	for _, env := range []string{"NATS_URL", "LOG_LEVEL", "LOG_FORMAT", "WS_SUBJECT_PREFIX",
		"DISPATCHER_ADDR", "DISPATCHER_QUEUE", "DISPATCHER_CONCURRENCY", "DISPATCHER_API_KEYS",
		"DISPATCHER_API_MAX_BODY", "DISPATCHER_ROUTES_FILE", "DISPATCHER_ROUTES_SECRET",
		"WS_PRESENCE", "WS_PRESENCE_BUCKET", "WS_PRESENCE_GRACE",
		"WS_INBOUND", "WS_INBOUND_STREAM", "DISPATCHER_MAX_DELIVER", "DISPATCHER_RETRY_BACKOFF", "DISPATCHER_ACK_WAIT", "DISPATCHER_PREFIX_CONSUMERS_MAX", "WS_HISTORY"} {
		t.Setenv(env, "") // restores the variable after the test
		os.Unsetenv(env)
	}
	cfg, err := service.LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := service.Config{}
	want.URL = "nats://127.0.0.1:4222"
	want.Level, want.Format = "info", "json"
	want.Prefix, want.Addr, want.Queue, want.Concurrency = "ws", ":8081", "wsgate-dispatcher", 64
	want.APIMaxBody = 1 << 20
	want.Presence, want.PresenceBucket, want.PresenceGrace = "off", "wsgate_presence", 5*time.Second
	want.Inbound, want.InboundStream, want.MaxDeliver, want.RetryBackoff, want.AckWait = "off", "WS_INBOUND", 5, "1s,2s,5s,10s", 30*time.Second
	want.PrefixConsumersMax = 1000
	want.History = "off"
	if cfg != want {
		t.Fatalf("defaults %+v, want %+v", cfg, want)
	}
}
