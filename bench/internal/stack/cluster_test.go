package stack

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestClusterStart starts three natsd processes as a cluster and checks
// that each is a separate server and that a message published on the first
// node reaches a subscriber on the last (interest crosses the routes).
func TestClusterStart(t *testing.T) {
	dir := t.TempDir()
	natsd := filepath.Join(dir, "natsd")
	build := exec.Command("go", "build", "-o", natsd, "./cmd/natsd")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build natsd: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := &Stack{}
	err := s.startCluster(ctx, Config{NATSD: natsd, NATSNodes: 3, Dir: dir})
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.NATSURLs) != 3 || len(s.Pids()) != 3 {
		t.Fatalf("urls %v, pids %v: want three nodes", s.NATSURLs, s.Pids())
	}
	seen := map[string]bool{}
	for _, u := range s.NATSURLs {
		seen[u] = true
	}
	if len(seen) != 3 {
		t.Fatalf("nodes share a URL: %v", s.NATSURLs)
	}
	if got := s.Names(); got[0] != "natsd1" || got[2] != "natsd3" {
		t.Fatalf("names %v", got)
	}

	sub, err := nats.Connect(s.NATSURLs[2])
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	got := make(chan *nats.Msg, 16)
	if _, err := sub.ChanSubscribe("bench.cluster", got); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	pub, err := nats.Connect(s.NATSURLs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	// The subscription reaches the first node over a route a moment after
	// the flush: publish until a message arrives.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := pub.Publish("bench.cluster", []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-got:
			if string(m.Data) != "x" {
				t.Fatalf("got %q", m.Data)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no message crossed the cluster within 30 s")
		}
	}
}
