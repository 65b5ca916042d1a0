package main

import (
	"flag"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func testScaleConfig(t *testing.T, args ...string) scaleConfig {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	get := scaleFlags(fs)
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

func TestScalePlan_EveryEdgeCountOnEveryTopology(t *testing.T) {
	c := testScaleConfig(t, "-conns", "400", "-broadcast-conns", "300")
	plan := c.plan()
	for _, n := range []int{1, 3} {
		for _, k := range []int{1, 2, 4, 8} {
			for _, sc := range []string{"idle", "unicast", "broadcast"} {
				want := scaleRun{sc, n, k, c.connsOf(sc)}
				if !slices.Contains(plan, want) {
					t.Errorf("plan lacks %+v", want)
				}
				args := strings.Join(c.args(want), " ")
				if !strings.Contains(args, "-edges "+strconv.Itoa(k)) || !strings.Contains(args, "-nats-nodes "+strconv.Itoa(n)) || !strings.Contains(args, "-scenario "+sc) {
					t.Errorf("%+v: loadgen arguments %q", want, args)
				}
			}
		}
	}
	// The curve against connections: idle at a quarter and a half too.
	for _, conns := range []int{100, 200} {
		if !slices.Contains(plan, scaleRun{"idle", 1, 1, conns}) {
			t.Errorf("plan lacks idle at %d connections", conns)
		}
	}
	if got := len(plan); got != 2*4*3+2 {
		t.Errorf("%d runs in a pass, want %d", got, 2*4*3+2)
	}
	if args := c.args(scaleRun{"broadcast", 1, 1, 300}); !slices.Contains(args, "300") || slices.Contains(args, "-client") {
		t.Errorf("broadcast arguments %v", args)
	}
	g := testScaleConfig(t, "-client", "gorilla")
	if args := strings.Join(g.args(scaleRun{"idle", 1, 1, 10}), " "); !strings.Contains(args, "-client gorilla") {
		t.Errorf("-client not passed on: %q", args)
	}
	if _, err := intList("1,0"); err == nil {
		t.Error("an edge count of 0 must be refused")
	}
}

// fakeResult is a loadgen record of a run of sr with figures that grow
// with the edges.
func fakeResult(sr scaleRun) *result {
	r := &result{Scenario: sr.scenario, Gateway: "wsgate", Connected: int64(sr.conns), RunSeconds: 10}
	r.Params.Conns, r.Params.Edges, r.Params.NATSNodes, r.Params.Rate = sr.conns, sr.edges, sr.nodes, 100
	r.Received = 1000
	r.AchievedRate = 99
	r.Derived.RSSPerConnKiB = 5 + float64(sr.edges)
	r.Derived.CPUPerConnUsPerS = 2
	r.Derived.ServerCPUPercent = 40 + float64(sr.edges)
	r.Latency.P50, r.Latency.P99 = 1, 5+float64(sr.nodes)
	return r
}

func TestScaleReport_TablesAndPictures(t *testing.T) {
	c := testScaleConfig(t, "-edges", "1,2", "-conns", "200", "-broadcast-conns", "200")
	cells := map[scaleRun]*cell{}
	for _, sr := range c.plan() {
		cells[sr] = &cell{command: "bench/.bin/loadgen " + strings.Join(c.args(sr), " "), runs: []*result{fakeResult(sr)}}
	}
	dir := t.TempDir()
	pics, err := scalePictures(c, cells, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(pics) != 8 {
		t.Fatalf("%d pictures, want 8 (4 costs, 2 latencies, 2 against connections): %v", len(pics), pics)
	}
	for _, p := range pics {
		f, err := os.Open(filepath.Join(dir, p.file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p.file, err)
		}
	}
	doc := renderScale(c, cells, machine{cpus: 2}, "raw", "docs/SCALING.md", pics, nil)
	for _, want := range []string{
		"-set scale -runs 1 -edges 1,2 -nats-nodes 1,3 -conns 200",
		// unicast, 3-node cluster, 2 edges: 42 % of a core for 10 s over 1000 deliveries.
		"| 3-node NATS cluster | 2 | 100 | 99.0 |",
		"| 4200 |",
		"![unicast: server CPU per delivered message against edges](plots/scaling-unicast-cpu.png)",
		"-edges 2 -nats-nodes 3",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
}
