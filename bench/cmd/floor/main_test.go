package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain serves the test binary's re-executions as the reader and the
// sleeper (floor re-executes itself), and fails the package if a test
// leaves a goroutine behind.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "reader" || os.Args[1] == "sleeper") {
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func TestFloor_EveryMessageReachesEveryReader(t *testing.T) {
	out := filepath.Join(t.TempDir(), "floor.json")
	var stdout, stderr bytes.Buffer
	args := []string{"-conns", "61", "-readers", "2", "-writers", "3", "-rate", "20", "-messages", "7", "-size", "300", "-json", out}
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("floor: %v\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "floor fanout conns=61 ") {
		t.Errorf("summary line %q", stdout.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Expected != 61*7 || rec.Received != rec.Expected {
		t.Errorf("received %d of %d, want 427 of 427", rec.Received, rec.Expected)
	}
	if !(0 <= rec.P50 && rec.P50 <= rec.P99 && rec.P99 <= rec.Max && rec.Max > 0) {
		t.Errorf("latencies p50 %v p99 %v max %v are not ordered", rec.P50, rec.P99, rec.Max)
	}
	if rec.WriteMs <= 0 || rec.WakeupUs <= 0 || rec.WriterCPUUs <= 0 || rec.ReaderCPUUs <= 0 {
		t.Errorf("write %v ms, wake-up %v µs, writer CPU %v µs, reader CPU %v µs: want all measured",
			rec.WriteMs, rec.WakeupUs, rec.WriterCPUUs, rec.ReaderCPUUs)
	}
	if !strings.Contains(rec.Command, "-conns 61 -readers 2 -writers 3 -rate 20 -messages 7 -size 300") {
		t.Errorf("command %q does not reproduce the run", rec.Command)
	}
}

func TestFloor_RefusesBadArguments(t *testing.T) {
	for _, args := range [][]string{{"-conns", "0"}, {"-rate", "0"}, {"-size", "7"}, {"-readers", "0"}} {
		var stdout, stderr bytes.Buffer
		if err := run(t.Context(), args, &stdout, &stderr); err == nil {
			t.Errorf("floor %v: no error", args)
		}
	}
}
