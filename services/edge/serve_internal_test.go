package edge

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// TestServe_HubStartFailureReleasesOwnNATS: when the hub cannot subscribe,
// Serve also closes the NATS connection the server opened itself (its
// reader and flusher goroutines would otherwise run on). The hub is given a
// closed connection of its own so that Start fails while the server's
// connection is live.
func TestServe_HubStartFailureReleasesOwnNATS(t *testing.T) {
	ns := testkit.RunNATS(t, nil)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	// The defaults, as a deployment gets them, plus what this test needs.
	for k, v := range map[string]string{"NATS_URL": ns.ClientURL(), "EDGE_ADDR": "127.0.0.1:0", "EDGE_ID": "e1", "EDGE_JWT_SECRET": "test-secret-0123456789"} {
		t.Setenv(k, v)
	}
	cfg, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	s.hub = hub.New(closed, hub.Config{EdgeID: cfg.ID, Subjects: wire.NewSubjects("ws")})
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Fatal("Serve succeeded")
	}
	if !s.nc.IsClosed() {
		t.Fatal("the server's own NATS connection is still open")
	}
}
