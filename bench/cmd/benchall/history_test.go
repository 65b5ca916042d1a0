package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeHistory is a record of a history run with the given CPU per
// delivery (µs), p99 (ms) and publishing time.
func fakeHistory(mode string, cpuUs, p99 float64, publishSecs float64) *result {
	r := &result{Scenario: "unicast", Gateway: "wsgate", Connected: 100, RunSeconds: 10, Sent: 1000, Expected: 1000, Received: 1000, PublishSeconds: publishSecs}
	r.Params.History, r.Params.Rate = mode, 100
	r.Derived.ServerCPUPercent = cpuUs * 1000 / (10 * 1e6) * 100
	r.Latency.P99 = p99
	if mode != "off" {
		r.HistoryStored = r.Sent
	}
	return r
}

func TestHistoryVerdicts_TargetsAndShortRate(t *testing.T) {
	c := historyConfig{unicastConns: 100, unicastRate: 100, duration: 10 * time.Second, broadcastConns: 100, broadcastRate: 100, messages: 1000,
		parts: []string{partUnicast, partBroadcast}, runs: 1}
	cells := historyCells{
		partUnicast: {
			"off":    {runs: []*result{fakeHistory("off", 10, 1.0, 10)}},
			"memory": {runs: []*result{fakeHistory("memory", 12.9, 3.5, 10)}, command: "bench/.bin/loadgen -start wsgate " + strings.Join(c.args(partUnicast, "memory"), " ")}, // 1.29×, +2.5 ms
		},
		partBroadcast: {
			"off":    {runs: []*result{fakeHistory("off", 2, 5, 10)}},
			"memory": {runs: []*result{fakeHistory("memory", 2.7, 5, 12.5)}}, // 1.35×; kept 80/s of 100
		},
	}
	cells[partBroadcast]["memory"].runs[0].HistoryStored = 990
	vs := historyVerdicts(c, cells)
	if len(vs) != 3 {
		t.Fatalf("%d verdicts, want 3 (CPU of each scenario, unicast p99): %+v", len(vs), vs)
	}
	want := map[string]string{"unicast: server CPU": "**pass**", "broadcast: server CPU": "**fail**", "unicast: latency p99": "**fail**"}
	for _, v := range vs {
		for prefix, pass := range want {
			if strings.HasPrefix(v.what, prefix) && v.pass != pass {
				t.Errorf("%s: %s, want %s (off %v, on %v, limit %v)", v.what, v.pass, pass, v.off, v.on, v.limit)
			}
		}
	}
	doc := renderHistory(c, cells, nil, nil, machine{cpus: 2}, "raw", "docs/perf/history.md")
	for _, s := range []string{
		"| on (memory) ⚠ | 100 | 80.0 |", // broadcast's publisher fell short: marked
		"| on (memory) | 100 | 100 |",    // unicast's did not
		"| 1.29× | **pass** |",
		"| +2.50 ms | **fail** |",
		"run whose stream stored 990 of the 1000 messages published",
		"bench/.bin/loadgen -start wsgate -scenario unicast -history memory",
		"Not measured in this generation: `-only` left the memory part out.",
	} {
		if !strings.Contains(doc, s) {
			t.Errorf("report lacks %q:\n%s", s, doc)
		}
	}
}

// buildHistoryTools builds loadgen and natsd into dir/bench/.bin and the
// edge into dir/bin, where benchall and loadgen look for them.
func buildHistoryTools(t *testing.T, dir string) string {
	t.Helper()
	dotBin := filepath.Join(dir, "bench", ".bin")
	for _, b := range []struct{ out, pkg, wd string }{
		{dotBin + "/", "./cmd/loadgen", filepath.Join("..", "..")},
		{dotBin + "/", "./cmd/natsd", filepath.Join("..", "..")},
		{filepath.Join(dir, "bin", "edge"), "./cmd/edge", filepath.Join("..", "..", "..", "services", "edge")},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = b.wd
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	return filepath.Join(dotBin, "loadgen")
}

// TestHistorySet_Smoke runs the history set with small numbers on real
// servers: every run with history off and on delivers every message once
// (the clients accept the [action, details, ref, seq] frames and the
// Server/recovery frame), the record says the history mode, and the memory
// part finds every message and subject in the stream.
func TestHistorySet_Smoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and load tool processes")
	}
	dir := t.TempDir()
	loadgen := buildHistoryTools(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := historyConfig{
		unicastConns: 40, unicastRate: 200, duration: 2 * time.Second,
		broadcastConns: 40, broadcastRate: 10, messages: 10,
		mem:   memConfig{users: 300, perSubject: 3, storages: []string{"memory"}, size: 128},
		parts: []string{partUnicast, partBroadcast, partMemory}, runs: 1,
	}
	r := &runner{bin: loadgen, results: filepath.Join(dir, "results"), log: testLog{t}}
	if err := os.MkdirAll(r.results, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "docs", "perf", "history.md")
	if err := runHistory(ctx, r, c, out, machine{cpus: 2}, time.Now()); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	if strings.Contains(doc, "failed run") || strings.Contains(doc, "failed:") || strings.Contains(doc, "run with loss") {
		t.Fatalf("a run failed or lost messages:\n%s", doc)
	}
	// The report holds the runs' records; read them back to check each.
	recs, err := filepath.Glob(filepath.Join(r.results, "*-history-*.json"))
	if err != nil || len(recs) != 4 {
		t.Fatalf("%d loadgen records (%v), want 4: unicast and broadcast, off and on", len(recs), err)
	}
	for _, path := range recs {
		res := readRecord(t, path)
		mode := "off"
		if strings.Contains(path, "-history-memory") {
			mode = "memory"
		}
		if res.Params.History != mode {
			t.Errorf("%s: record says history %q, want %q", path, res.Params.History, mode)
		}
		if res.Sent == 0 || res.Received != res.Expected || res.Lost != 0 || res.Duplicates != 0 || res.ClientErrors != 0 || res.PublishErrors != 0 || res.Dropped != 0 {
			t.Errorf("%s: sent %d, expected %d, received %d, lost %d, duplicates %d, errors %d+%d, dropped %d: %v",
				path, res.Sent, res.Expected, res.Received, res.Lost, res.Duplicates, res.ClientErrors, res.PublishErrors, res.Dropped, res.ErrorSamples)
		}
		if stored := map[string]uint64{"off": 0, "memory": res.Sent}[mode]; res.HistoryStored != stored {
			t.Errorf("%s: the history stream held %d messages, want %d", path, res.HistoryStored, stored)
		}
		if res.PublishSeconds <= 0 {
			t.Errorf("%s: no publishing time in the record", path)
		}
	}
	mems, err := filepath.Glob(filepath.Join(r.results, "*-memory-memory.json"))
	if err != nil || len(mems) != 1 {
		t.Fatalf("memory records %v (%v), want one", mems, err)
	}
	if _, err := os.Stat(filepath.Join(memDir(r.results, "memory"), "jetstream-natsd")); !os.IsNotExist(err) {
		t.Errorf("the memory part left its JetStream store behind (%v)", err)
	}
	for _, s := range []string{
		"| memory | 1 | 300 | 300 |", // one message on each of 300 subjects
		"| memory | 3 | 900 | 300 |",
		"## unicast: 40 users, 200 msg/s",
		"## broadcast: 40 connections, 10 messages",
		"unicast: latency p99, history on ≤ off + 2 ms",
	} {
		if !strings.Contains(doc, s) {
			t.Errorf("report lacks %q:\n%s", s, doc)
		}
	}
}

func readRecord(t *testing.T, path string) *result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &res
}

// testLog writes benchall's progress lines to the test's log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
