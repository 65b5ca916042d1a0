package main

import (
	"slices"
	"strings"
	"testing"
)

// record builds a trimmed record of a message scenario.
func record(scenario string, conns int, asked, achieved, deliveries, p99 float64, lost uint64) *result {
	r := &result{Scenario: scenario, Connected: int64(conns), AchievedRate: achieved, DeliveriesPerS: deliveries, Lost: lost, Expected: 120000}
	r.Params.Conns, r.Params.Rate = conns, asked
	r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max = p99/4, p99/2, p99, p99*2
	r.Received = 120000 - lost
	r.RunSeconds = 10
	return r
}

// TestRender_MarksShortRunsAndComparesNoLatencyOfThem: a gateway that took
// 10,450 of the 12,000 msg/s asked is marked on its rows with the rate it
// achieved, its latencies carry that rate and are not compared; a run that
// kept up is neither marked nor kept from comparison.
func TestRender_MarksShortRunsAndComparesNoLatencyOfThem(t *testing.T) {
	specs, err := sets("standard")
	if err != nil {
		t.Fatal(err)
	}
	var keep []spec
	for _, s := range specs {
		if s.name == "unicast" || s.name == "broadcast" || s.name == "unicast-max" {
			keep = append(keep, s)
		}
	}
	cells := map[string]map[string]*cell{
		"unicast": {
			"wsgate":     {runs: []*result{record("unicast", 10000, 12000, 11999, 11998, 5.4, 0)}},
			"centrifugo": {runs: []*result{record("unicast", 10000, 12000, 10450, 10440, 16, 0)}},
		},
		"broadcast": {
			"wsgate":     {runs: []*result{record("broadcast", 10000, 5, 5, 49300, 168, 0)}},
			"centrifugo": {runs: []*result{record("broadcast", 10000, 5, 5, 49100, 190, 0)}},
		},
		"unicast-max": {
			"wsgate":     {maxRate: 20000, maxAchieved: 19990, maxP99: 9.2, stopWhy: "24,000/s: p99 44.0 ms > 10", steps: []*result{{}}},
			"centrifugo": {stopWhy: "2,000/s: ⚠ short: 1,800 of 2,000/s", steps: []*result{{}}},
		},
	}
	doc := render("standard", 1, "", "x.md", keep, cells, nil, nil, machine{publish: publishPath{"batch", 4}}, "", "raw")
	for _, want := range []string{
		"| unicast | achieved send rate (/s) | 11999 | 10450 ⚠ short: 10,450 of 12,000/s |",
		"| unicast | latency p99 (ms) | 5.40 @ 11,999/s | 16.0 @ 10,450/s ⚠ short: 10,450 of 12,000/s | not compared: Centrifugo ⚠ |",
		"| broadcast | latency p99 (ms) | 168 @ 5/s | 190 @ 5/s | 0.88× (wsgate better) |",
		"| unicast-max | achieved rate at that step (msg/s) | 19990 | none passed |",
		"| unicast-max | latency p99 at that rate (ms) | 9.20 @ 19,990/s |",
		"| unicast-max | why the search stopped (the first step that failed twice) | 24,000/s: p99 44.0 ms > 10 | 2,000/s: ⚠ short: 1,800 of 2,000/s |",
		"`loadgen -publish batch -publish-inflight 4`",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(doc, "| unicast | latency p99 (ms) | 5.40 @ 11,999/s | 16.0 @ 10,450/s ⚠ short: 10,450 of 12,000/s | 0.") {
		t.Error("latencies of a short run were compared")
	}
}

// TestStepFailure_AShortOrLateStepFails: a step passes only when it kept the
// asked rate, delivered in time, lost nothing and kept its p99.
func TestStepFailure_AShortOrLateStepFails(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *result
		fail string
	}{
		{"kept up", record("unicast", 10000, 12000, 11999, 11990, 4, 0), ""},
		{"short", record("unicast", 10000, 12000, 10450, 10440, 4, 0), "⚠ short: 10,450 of 12,000/s"},
		{"behind", record("unicast", 10000, 12000, 11999, 9000, 4, 0), "⚠ behind: delivered 9,000 of 11,999/s"},
		{"lost", record("unicast", 10000, 12000, 11999, 11990, 4, 3), "⚠ lost 3 of 120,000"},
		{"slow", record("unicast", 10000, 12000, 11999, 11990, 12, 0), "p99 12.0 ms > 10"},
	} {
		got := stepFailure(tc.r, 10)
		if tc.fail == "" && got != "" || !strings.Contains(got, tc.fail) {
			t.Errorf("%s: failure %q, want %q", tc.name, got, tc.fail)
		}
	}
}

// TestWithVariants: broadcast once per client and GODEBUG choice, and
// Centrifugo's unicast once per publishing path in its own section.
func TestWithVariants(t *testing.T) {
	specs, _ := sets("standard")
	paths, err := parsePublishPaths("batch,single:32")
	if err != nil || len(paths) != 2 || paths[0] != (publishPath{"batch", 4}) || paths[1] != (publishPath{"single", 32}) {
		t.Fatalf("paths %v, %v", paths, err)
	}
	out, err := withVariants("standard", specs, "epoll,gorilla", "on,off", paths)
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]string{}
	for _, s := range out {
		args[s.name] = strings.Join(s.args, " ")
	}
	for name, want := range map[string]string{
		"broadcast":                     "-rate 5 -messages 50",
		"broadcast-godebug-off":         "-messages 50 -godebug=",
		"broadcast-gorilla":             "-messages 50 -client gorilla",
		"broadcast-gorilla-godebug-off": "-client gorilla -godebug=",
		"unicast-publish-batch-4":       "-publish batch -publish-inflight 4",
		"unicast-publish-single-32":     "-publish single -publish-inflight 32",
	} {
		if !strings.HasSuffix(args[name], want) {
			t.Errorf("%s: args %q, want them to end with %q", name, args[name], want)
		}
	}
	if len(out) != len(specs)+3+2 {
		t.Errorf("%d specs, want %d", len(out), len(specs)+5)
	}
	if _, err := parsePublishPaths("grpc"); err == nil {
		t.Error("want an error for an unknown path")
	}
	if got := withExtra([]string{"-publish", "single"}, []string{"-publish", "batch", "-publish-inflight", "4"}); strings.Join(got, " ") != "-publish single -publish-inflight 4" {
		t.Errorf("withExtra %v", got)
	}
}

// TestWithHistory: the broadcast and unicast scenarios and their searches
// once more for wsgate alone with -history, each right after its own.
func TestWithHistory(t *testing.T) {
	specs, _ := sets("standard")
	out, err := withHistory("standard", specs, "memory")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i, s := range out {
		names = append(names, s.name)
		base, ok := strings.CutSuffix(s.name, "-history")
		if !ok {
			continue
		}
		if out[i-1].name != base {
			t.Errorf("%s follows %s, not its own scenario", s.name, out[i-1].name)
		}
		if !strings.HasSuffix(strings.Join(s.args, " "), "-history memory") || s.steps == nil != (out[i-1].steps == nil) {
			t.Errorf("%s: args %v, steps %v", s.name, s.args, s.steps)
		}
		if s.limit() != out[i-1].limit() {
			t.Errorf("%s: p99 limit %g ms, its scenario's is %g", s.name, s.limit(), out[i-1].limit())
		}
		if only, _ := s.onlyGateway(); only != "wsgate" {
			t.Errorf("%s runs %q, want wsgate alone", s.name, only)
		}
	}
	for _, want := range []string{"broadcast-history", "broadcast-max-history", "unicast-max-history", "unicast-history"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %s in %v", want, names)
		}
	}
	if len(out) != len(specs)+4 {
		t.Errorf("%d specs, want %d", len(out), len(specs)+4)
	}
	if same, _ := withHistory("standard", specs, ""); len(same) != len(specs) {
		t.Error("-wsgate-history \"\" added scenarios")
	}
	if _, err := withHistory("standard", specs, "disk"); err == nil {
		t.Error("want an error for an unknown storage")
	}
}

// TestRenderPublish_PathsSideBySide: Centrifugo's unicast once per
// publishing path, wsgate's for reference, a short path marked.
func TestRenderPublish_PathsSideBySide(t *testing.T) {
	specs, _ := sets("standard")
	paths, _ := parsePublishPaths("batch,single:32")
	specs, err := withVariants("standard", specs, "epoll", "on", paths)
	if err != nil {
		t.Fatal(err)
	}
	cells := map[string]map[string]*cell{}
	for _, s := range specs {
		cells[s.name] = map[string]*cell{"wsgate": {}, "centrifugo": {}}
	}
	cells["unicast"]["wsgate"].runs = []*result{record("unicast", 10000, 12000, 11999, 11998, 5.4, 0)}
	cells["unicast-publish-batch-4"]["wsgate"].na = "wsgate publishes over NATS"
	cells["unicast-publish-batch-4"]["centrifugo"].runs = []*result{record("unicast", 10000, 12000, 11998, 11990, 116, 0)}
	cells["unicast-publish-single-32"]["wsgate"].na = "wsgate publishes over NATS"
	cells["unicast-publish-single-32"]["centrifugo"].runs = []*result{record("unicast", 10000, 12000, 10450, 10440, 16, 0)}
	doc := render("standard", 1, "", "x.md", specs, cells, nil, nil, machine{publish: paths[0]}, "", "raw")
	for _, want := range []string{
		"## Centrifugo's publishing paths",
		"| wsgate (NATS publish, for reference) | 11999 |",
		"| Centrifugo, batch, 4 in flight | 11998 |",
		"| Centrifugo, single, 32 in flight | 10450 ⚠ short: 10,450 of 12,000/s |",
		"Short of the asked rate here: single, 32 in flight (10,450/s",
		"Of the paths that kept the rate, batch, 4 in flight has the lowest p99 (116 ms); the main table uses batch, 4 in flight.",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(doc, "| unicast-publish-") {
		t.Error("a publishing path's rows are in the main table")
	}
}
