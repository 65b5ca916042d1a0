package edge_test

import (
	"context"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// otlpEnv makes the edge set up a trace exporter, whose batching goroutine
// runs until telemetry is shut down: a leak of telemetry is then a leaked
// goroutine. Nothing listens there; no span is exported in these tests.
var otlpEnv = map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}

func loadConfig(t *testing.T, env map[string]string) edge.Config {
	t.Helper()
	base := map[string]string{"EDGE_ADDR": "127.0.0.1:0", "EDGE_JWT_SECRET": secret, "LOG_LEVEL": "error"}
	for _, m := range []map[string]string{otlpEnv, env} {
		for k, v := range m {
			base[k] = v
		}
	}
	for k, v := range base {
		t.Setenv(k, v)
	}
	cfg, err := edge.LoadConfig()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// TestNew_FailureReleasesTelemetry: when the verifier or the NATS setup
// fails, New shuts down the telemetry it set up: no goroutine is left.
func TestNew_FailureReleasesTelemetry(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"verifier", map[string]string{"EDGE_JWT_PUBLIC_KEY_FILE": missing}},
		{"nats", map[string]string{"NATS_URL": "nats://127.0.0.1:4222", "NATS_CREDS": missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			if _, err := edge.New(loadConfig(t, tc.env), nil); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
}

// TestServe_HubStartFailureReleasesEverything: when the hub cannot
// subscribe (here: the NATS connection it is given is closed), Serve
// returns the error and leaves no goroutine behind: telemetry shut down,
// poller stopped, listener closed.
func TestServe_HubStartFailureReleasesEverything(t *testing.T) {
	ns := edgetest.RunNATS(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	nc := edgetest.Connect(t, ns.ClientURL())
	nc.Close()
	srv, err := edge.New(loadConfig(t, nil), nil, edge.WithNATS(nc))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(context.Background()); err == nil {
		t.Fatal("Serve succeeded on a closed NATS connection")
	}
}
