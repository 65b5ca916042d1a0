package stack

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// buildAll builds natsd and the edge into dir.
func buildAll(t *testing.T, dir string) (natsd, binDir string) {
	t.Helper()
	for _, b := range []struct{ out, pkg, wd string }{
		{filepath.Join(dir, "natsd"), "./cmd/natsd", filepath.Join("..", "..")},
		{filepath.Join(dir, "edge"), "./services/edge/cmd/edge", filepath.Join("..", "..", "..")},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = b.wd
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return filepath.Join(dir, "natsd"), dir
}

// TestKillAndRestartEdge_WithHistory starts NATS with JetStream and an edge
// with WS_HISTORY on (the edge creates the history stream), kills the edge
// with SIGKILL and restarts it on the address its clients know.
func TestKillAndRestartEdge_WithHistory(t *testing.T) {
	dir := t.TempDir()
	natsd, binDir := buildAll(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := Start(ctx, Config{
		Gateway: "wsgate", Edges: 1, BinDir: binDir, NATSD: natsd, Secret: "s", SendQueue: 64,
		JetStream: true, EdgeEnv: []string{"WS_HISTORY=memory"}, Dir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(ctx, "WS_HISTORY"); err != nil {
		t.Fatalf("the edge did not create the history stream (JetStream or EdgeEnv not passed): %v", err)
	}

	addr := strings.TrimSuffix(strings.TrimPrefix(s.URLs[0], "ws://"), "/ws")
	if err := s.Kill("edge1"); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the killed edge still accepts connections")
	}
	if err := s.Restart(ctx, "edge1"); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the restarted edge does not listen on %s: %v", addr, err)
	}
	c.Close()
	if err := s.Kill("nope"); err == nil {
		t.Fatal("killing an unknown server is not an error")
	}
}
