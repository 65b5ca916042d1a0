package load

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/bench/internal/stack"
)

// TestIdleTabsSmoke: -tabs 3 on 2 edges makes users of three connections
// each, every user with connections on both edges, as the tabs figure
// (docs/perf/tabs.md) assumes. The edges' Client/authentication events
// count them: a user with more or fewer than 3 connections (a tab counted
// twice or lost), or with all its tabs on one edge, fails it.
func TestIdleTabsSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	ns := runNATS(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	edges := map[string]map[string]int{} // user → edge → connections
	sub, err := nc.Subscribe("ws.in.Client/authentication", func(m *nats.Msg) {
		var env struct {
			User string `json:"user"`
			Edge string `json:"edge"`
		}
		if json.Unmarshal(m.Data, &env) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if edges[env.User] == nil {
			edges[env.User] = map[string]int{}
		}
		edges[env.User][env.Edge]++
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	const secret, users, tabs = "smoke-secret", 10, 3
	st, err := stack.StartOnNATS(ctx, stack.Config{
		Edges: 2, BinDir: filepath.Dir(edgeBin), Secret: secret, SendQueue: 256, Dir: t.TempDir(),
	}, ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop edges: %v", err)
		}
	})
	var progress strings.Builder
	res, err := Run(ctx, Config{
		Scenario: Idle, Gateway: "wsgate", Conns: users * tabs, Tabs: tabs, Workers: 0, LocalIPs: 2,
		Ramp: 300, Duration: time.Second, URLs: st.URLs, Secret: secret, Pids: st.Pids(), Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != users*tabs || res.Failed != 0 || res.Dropped != 0 || res.Params.Users != users {
		t.Fatalf("%d connected, %d failed, %d dropped, %d users; errors %v", res.Connected, res.Failed, res.Dropped, res.Params.Users, res.ErrorSamples)
	}
	if len(res.Server.AfterRamp) != 2 || res.Server.AfterRamp[0].RSSKiB <= 0 || res.Server.AfterRamp[1].RSSKiB <= 0 {
		t.Fatalf("edge samples %+v", res.Server)
	}
	// Every event is published before its connection's ok; poll anyway,
	// for the last ones on the way on a loaded machine.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); <-tick.C {
		mu.Lock()
		n := 0
		for _, by := range edges {
			for _, c := range by {
				n += c
			}
		}
		mu.Unlock()
		if n >= users*tabs {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(edges) != users {
		t.Fatalf("%d users authenticated, want %d: %v", len(edges), users, edges)
	}
	for u, by := range edges {
		n := 0
		for _, c := range by {
			n += c
		}
		if n != tabs || len(by) != 2 {
			t.Errorf("user %s: connections per edge %v, want %d on both edges", u, by, tabs)
		}
	}
}
