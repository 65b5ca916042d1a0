package main

import (
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"
)

func TestInboundCPUPerAction_SumsEdgeNATSAndDispatcher(t *testing.T) {
	const rec = `{"received": 1000, "server": {"names": ["natsd", "edge1", "dispatcher"],
		"after_ramp": [{"cpu_us": 1000}, {"cpu_us": 2000}, {"cpu_us": 3000}],
		"after_run":  [{"cpu_us": 201000}, {"cpu_us": 302000}, {"cpu_us": 103000}]}}`
	var r result
	if err := json.Unmarshal([]byte(rec), &r); err != nil {
		t.Fatal(err)
	}
	run := inboundRun{res: &r}
	for _, tc := range []struct {
		name string
		want float64
	}{{"", 600}, {"edge", 300}, {"natsd", 200}, {"dispatcher", 100}} {
		if got := run.cpuPerAction(tc.name); got != tc.want {
			t.Errorf("cpuPerAction(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRenderInbound_VerdictsAndCommands(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	get := inboundFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	c, err := get("long,memory")
	if err != nil {
		t.Fatal(err)
	}
	c.runs = 3
	long := &longRecord{Command: "bench/.bin/inboundrun -actions 1000", Actions: 1000, Acked: 1000, Kills: map[string]int{"dispatcher": 2, "edge1": 1}, KillsTotal: 3}
	long.Tally.Lost, long.Tally.HandledTwice = 2, 1
	mem := &memRecord{Command: "bench/.bin/inboundmem -n 1000", BytesPerIDPurged: 160}
	doc := renderInbound(&inboundOutcome{cfg: c, long: long, mem: mem}, machine{}, "raw")
	for _, want := range []string{
		"| lost (effect never happened) | 2 | 0: **FAIL** |",
		"| handled twice (effect happened twice) | 1 | 0: **FAIL** |",
		"| dead letters | 0 | 0: **pass** |",
		"(dispatcher 2, edge1 1)",
		"`bench/.bin/inboundrun -actions 1000`",
		"| **NATS memory per message id in the window, actions consumed (live heap, B)** | **160** |",
		"Not run in this generation",
		"-only long,memory",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, err := get("nope"); err == nil {
		t.Error("-only accepted a part the set does not have")
	}
}
