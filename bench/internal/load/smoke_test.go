package load

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/bench/internal/stack"
)

// edgeBin is the edge built from ../services/edge/cmd/edge by TestMain.
var edgeBin string

func TestMain(m *testing.M) {
	code := func() int {
		dir, err := os.MkdirTemp("", "loadgen-smoke-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		edgeBin = filepath.Join(dir, "edge")
		// The edge module builds with its own go.mod (it replaces its
		// sibling modules), in or out of the workspace.
		build := exec.Command("go", "build", "-o", edgeBin, "./cmd/edge")
		build.Dir = filepath.Join("..", "..", "..", "services", "edge")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build edge: %v\n%s", err, out)
			return 1
		}
		code := m.Run()
		if code == 0 {
			// goleak.VerifyTestMain would run the tests a second time.
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				return 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// echoResponder stands in for the dispatcher's echo handler (DESIGN §5):
// every ws.in.echo envelope goes back to its connection with its ref.
func echoResponder(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.Subscribe("ws.in.echo", func(m *nats.Msg) {
		var env struct {
			Details    json.RawMessage `json:"details"`
			Ref        json.RawMessage `json:"ref"`
			Connection string          `json:"connection"`
		}
		if json.Unmarshal(m.Data, &env) != nil {
			return
		}
		out, _ := json.Marshal(map[string]json.RawMessage{"action": json.RawMessage(`"echo"`), "details": env.Details, "ref": env.Ref})
		_ = nc.Publish("ws.send.conn."+env.Connection, out)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestRoundtripSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	ns := runNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	echoResponder(t, nc)

	const secret = "smoke-secret"
	st, err := stack.StartOnNATS(ctx, stack.Config{
		Edges: 1, BinDir: filepath.Dir(edgeBin), Secret: secret, SendQueue: 256, Dir: t.TempDir(),
	}, ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop edge: %v", err)
		}
	})

	var progress strings.Builder
	res, err := Run(ctx, Config{
		Scenario: Roundtrip, Gateway: "wsgate", Conns: 20, Workers: 0, LocalIPs: 2,
		Ramp: 200, Duration: 2 * time.Second, Rate: 200, Size: 64, Drain: 5 * time.Second,
		URLs: st.URLs, Secret: secret, Pids: st.Pids(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Connected != 20 || res.Failed != 0 || res.Dropped != 0 {
		t.Fatalf("connections: %d connected, %d failed, %d dropped; errors %v", res.Connected, res.Failed, res.Dropped, res.ErrorSamples)
	}
	if res.Sent < 300 {
		t.Fatalf("sent %d requests in 2 s at 200/s, want about 400", res.Sent)
	}
	if res.Lost != 0 || res.Duplicates != 0 || res.Received != res.Sent || res.ClientErrors != 0 {
		t.Fatalf("sent %d, received %d, lost %d, duplicates %d, errors %d: %v", res.Sent, res.Received, res.Lost, res.Duplicates, res.ClientErrors, res.ErrorSamples)
	}
	if res.Latency.Count != res.Received || res.Latency.P99 <= 0 || res.Latency.Max < res.Latency.P50 {
		t.Fatalf("implausible latency %+v", res.Latency)
	}
	if len(res.Server.AfterRun) != 1 || res.Server.AfterRun[0].RSSKiB <= 0 {
		t.Fatalf("server samples %+v", res.Server)
	}
	if !strings.Contains(progress.String(), "connected 20/20") {
		t.Fatalf("no live counters on the progress output:\n%s", progress.String())
	}
}

func TestConfigChecks(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"fine", Config{Scenario: Roundtrip, Gateway: "wsgate", Conns: 10, Rate: 1}, true},
		{"unknown scenario", Config{Scenario: "storm", Gateway: "wsgate", Conns: 10, Rate: 1}, false},
		{"unknown gateway", Config{Scenario: Idle, Gateway: "x", Conns: 10}, false},
		{"too many per worker", Config{Scenario: Idle, Gateway: "wsgate", Conns: 40000, Workers: 2}, false},
		{"too many in process", Config{Scenario: Idle, Gateway: "wsgate", Conns: 20000}, false},
		{"no rate", Config{Scenario: Broadcast, Gateway: "wsgate", Conns: 10}, false},
		{"tabs", Config{Scenario: Idle, Gateway: "wsgate", Conns: 30, Tabs: 3}, true},
		{"tabs not dividing conns", Config{Scenario: Idle, Gateway: "wsgate", Conns: 31, Tabs: 3}, false},
		{"tabs outside idle", Config{Scenario: Unicast, Gateway: "wsgate", Conns: 30, Tabs: 3, Rate: 1}, false},
		{"reliable roundtrip", Config{Scenario: Roundtrip, Gateway: "wsgate", Conns: 10, Rate: 1, Reliable: true}, true},
		{"reliable broadcast", Config{Scenario: Broadcast, Gateway: "wsgate", Conns: 10, Rate: 1, Reliable: true}, false},
		{"reliable centrifugo", Config{Scenario: Roundtrip, Gateway: "centrifugo", Conns: 10, Rate: 1, Reliable: true}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.cfg.check(); (err == nil) != c.ok {
				t.Fatalf("check() = %v, want ok=%v", err, c.ok)
			}
		})
	}
	if ok, why := Supported("centrifugo", Hello); ok || why == "" {
		t.Fatal("hello has no Centrifugo equivalent and must say why")
	}
	if User(5, 2) != "u2" || User(5, 1) != "u5" {
		t.Fatal("User maps connections to users by tabs")
	}
}
