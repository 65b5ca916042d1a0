package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
)

func testTabsConfig(t *testing.T, args ...string) tabsConfig {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	get := tabsFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	c, err := get()
	if err != nil {
		t.Fatal(err)
	}
	c.runs = 1
	return c
}

func TestTabsArgs_ConnectionsWorkersAndTabs(t *testing.T) {
	c := testTabsConfig(t)
	for _, tc := range []struct {
		mode tabsMode
		want string
	}{
		{tabsMode{"per tab", 3}, "-scenario idle -conns 30000 -tabs 3 -edges 2 -workers 4 "},
		{tabsMode{"shared", 1}, "-scenario idle -conns 10000 -tabs 1 -edges 2 -workers 2 "},
	} {
		if got := strings.Join(c.args(tc.mode), " "); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%s: loadgen arguments %q, want them to start %q", tc.mode.name, got, tc.want)
		}
	}
	if !slices.Equal(c.modes(), []tabsMode{{"per tab", 3}, {"shared", 1}}) {
		t.Errorf("modes %v", c.modes())
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	get := tabsFlags(fs)
	if err := fs.Parse([]string{"-tabs", "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := get(); err == nil {
		t.Error("-tabs 1 compares nothing and must be refused")
	}
}

// tabsRecord is a loadgen record of conns idle connections on two edges
// that grew by kib KiB each, and a NATS server.
func tabsRecord(conns int, kib int64) *result {
	r := &result{Scenario: "idle", Gateway: "wsgate", Connected: int64(conns)}
	r.Server.Names = []string{"natsd", "edge1", "edge2"}
	r.Server.Before = []sample{{RSSKiB: 10240}, {RSSKiB: 20480}, {RSSKiB: 20480}}
	r.Server.AfterRamp = []sample{{RSSKiB: 20480}, {RSSKiB: 20480 + kib}, {RSSKiB: 20480 + kib}}
	return r
}

func TestTabsReport_PerUserFiguresAndVerdict(t *testing.T) {
	c := testTabsConfig(t, "-users", "1000")
	cells := map[string]*cell{
		"per tab": {command: "per-tab-cmd", runs: []*result{tabsRecord(3000, 30000)}},
		"shared":  {command: "shared-cmd", runs: []*result{tabsRecord(1000, 10000)}},
	}
	doc := renderTabs(c, cells, machine{cpus: 2}, "raw", "docs/perf/tabs.md")
	for _, want := range []string{
		"-set tabs -runs 1 -users 1000 -tabs 3 -tabs-edges 2 -tabs-hold 10s -out docs/perf/tabs.md",
		// per tab: 2 × 30000 KiB = 58.6 MiB of growth, 60 KiB per user, 20 per connection; edges 98.6 MiB in all.
		"| per tab | 3 | 3000 | 98.6 | 58.6 | 60.0 | 20.0 | 20.0 |",
		"| shared | 1 | 1000 | 59.5 | 19.5 | 20.0 | 20.0 | 20.0 |",
		"**3.00×** the connections",
		"**Pass**",
		"`per-tab-cmd`",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
	cells["shared"].runs[0].Connected = 999
	if doc := renderTabs(c, cells, machine{cpus: 2}, "raw", "x.md"); !strings.Contains(doc, "**Fail**") || !strings.Contains(doc, "999 of 1000 connections held") {
		t.Errorf("a run that lost a connection must fail the set:\n%s", doc)
	}
}
