package main

import (
	"strings"
	"testing"

	"github.com/wsgate/wsgate/bench/internal/presenceload"
)

// TestRender: the report marks each figure against its target, labels a
// run smaller than the as a smoke run, and the exit status follows
// the broken promises (a ghost, a missing event, a lost join message).
func TestRender(t *testing.T) {
	o := &outcome{
		command: "bench/.bin/presence",
		joins:   []*presenceload.JoinResult{{Edges: 2, Joins: 200, InForce: presenceload.Quantiles{P99: 12}}},
		soak: &presenceload.SoakResult{Kills: 100, Users: 3000, OfflineLimitMs: 6000,
			OfflineLatency: presenceload.Quantiles{Count: 10, P99: 7000}},
		count: &presenceload.CountResult{Members: 100000, Requests: 2000,
			Rows: []presenceload.CountRow{{Payload: `{"limit":0}`, Latency: presenceload.Quantiles{P99: 0.5}}}},
	}
	doc := render(o, "raw")
	for _, want := range []string{
		"| join in force on all 2 edges, p99 (ms), at 0 joins/s | ≤ 50 | 12.0 | pass (smoke run) |",
		"| soak: offline latency p99 (ms) | ≤ lease + grace + 2 s = 6000 | 7000 | **fail** |",
		"| count of a group of 100000 members, p99 (ms), at 0 requests/s | ≤ 5 | 0.50 | pass |",
		"**Smoke run**: smaller than the issue's figure (3000 joins per K)",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Count(doc, "**Smoke run**") != 1 {
		t.Errorf("%d smoke labels, want 1 (the join's)", strings.Count(doc, "**Smoke run**"))
	}
	if err := broken(o); err != nil {
		t.Errorf("no promise broke, yet: %v", err)
	}
	o.soak.GhostConnections = 1
	o.soak.Events.Duplicated = 1
	o.joins[0].Lost = 1
	err := broken(o)
	for _, want := range []string{"ghost", "duplicated", "missed a connection"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("broken() = %v, want it to name %q", err, want)
		}
	}
}
