package main

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestTally(t *testing.T) {
	// 4 actions from 2 clients: 0 handled once after a redelivery the
	// idempotency check skipped, 1 handled twice, 2 stored twice, 3 lost.
	lines := strings.Join([]string{
		"u0.0 1 new", "u0.0 2 seen",
		"u1.1 1 new", "u1.1 2 new",
		"u0.2 1 new", "u0.2 1 seen",
		"u1.0 1 new", // action 0 is u0's: not an action of the run
	}, "\n")
	got, err := tally(strings.NewReader(lines), 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := Tally{Deliveries: 7, Redeliveries: 2, Skipped: 2, Handled: 3, Lost: 1, HandledTwice: 1, StoredTwice: 1, Unknown: 1}
	got.Examples = nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("tally\n got %+v\nwant %+v", got, want)
	}
	if got.OK() {
		t.Fatal("a tally with faults is OK")
	}
	clean, _ := tally(strings.NewReader("u0.0 1 new\nu1.1 1 new\n"), 2, 2)
	if !clean.OK() {
		t.Fatalf("a clean tally is not OK: %+v", clean)
	}
}

func TestNackNumber(t *testing.T) {
	if n, ok := nackNumber([]byte(`[503,"not stored"],"42"]`)); !ok || n != 42 {
		t.Fatalf("nackNumber = %d %v", n, ok)
	}
}

// build builds the run's programs into dir.
func build(t *testing.T, dir string) {
	t.Helper()
	root := filepath.Join("..", "..", "..")
	for _, b := range []struct{ out, pkg, wd string }{
		{"natsd", "./cmd/natsd", filepath.Join("..", "..")},
		{"edge", "./services/edge/cmd/edge", root},
		{"counthandler", "./services/devstack/cmd/counthandler", root},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = b.wd
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
}

// TestLongRunSmoke is the long run in small: a few thousand reliable
// actions while the dispatcher and both edges are killed and restarted;
// every action must be handled exactly once, none dead.
func TestLongRunSmoke(t *testing.T) {
	dir := t.TempDir()
	build(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o := options{
		actions: 3000, clients: 20, edges: 2, maxDeliver: 5, rate: 1000,
		killEvery: 500 * time.Millisecond, down: 200 * time.Millisecond, kill: "dispatcher,edge1,edge2",
		ackWait: time.Second, resend: 3 * time.Second, settle: 30 * time.Second, timeout: 80 * time.Second,
		storage: "memory", binDir: dir, natsd: filepath.Join(dir, "natsd"), handler: filepath.Join(dir, "counthandler"),
		workDir: dir,
	}
	rep, err := longRun(ctx, o, "test", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep.summary())
	if !rep.OK {
		t.Fatalf("not every action handled exactly once: %s %v", rep.summary(), rep.Tally.Examples)
	}
	if rep.Kills["dispatcher"] == 0 || rep.Kills["edge1"] == 0 {
		t.Fatalf("the run did not kill the dispatcher and an edge: %v", rep.Kills)
	}
	if rep.Tally.Handled != o.actions || rep.Acked != uint64(o.actions) {
		t.Fatalf("handled %d, acked %d of %d", rep.Tally.Handled, rep.Acked, o.actions)
	}
}
