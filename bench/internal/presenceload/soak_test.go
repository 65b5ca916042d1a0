package presenceload

import (
	"context"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// buildBin builds natsd, the edge and the dispatcher into a temporary bin,
// in one go build of the workspace (the three link in parallel).
func buildBin(t *testing.T) Bin {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"./bench/cmd/natsd", "./services/edge/cmd/edge", "./services/dispatcher/cmd/dispatcher")
	cmd.Dir = filepath.Join("..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return Bin{Dir: dir, NATSD: filepath.Join(dir, "natsd"), Work: dir}
}

// TestSoak_SmallKillsLeaveNoGhostAndEveryEventOnce is the kill soak in
// small: 100 users on 3 edges with 2 dispatchers, 5 SIGKILLs with restarts; afterwards
// presence lists exactly the open connections, every user's online and
// offline events alternate once each and match its state, and every user
// that stayed away got its offline within lease + grace + 2 s.
func TestSoak_SmallKillsLeaveNoGhostAndEveryEventOnce(t *testing.T) {
	bin := buildBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := Soak(ctx, SoakConfig{
		Bin: bin, Edges: 3, Dispatchers: 2, Users: 100, Kills: 5, KillEvery: time.Second,
		Lease: time.Second, Grace: time.Second, Away: 0.5, CloseAtEnd: 0.3, Seed: 1,
		Progress: testWriter{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: %+v", *res)
	if res.Kills != 5 {
		t.Errorf("%d kills, want 5", res.Kills)
	}
	if res.OfflineLatency.Count == 0 {
		t.Error("no user stayed away after a kill: the offline latency was not measured")
	}
	if res.Events.Online < 100 || res.Events.Offline < res.Closed {
		t.Errorf("%d online and %d offline events for 100 users of which %d closed", res.Events.Online, res.Events.Offline, res.Closed)
	}
	if !res.OK() {
		t.Errorf("soak failed: ghosts %d, missing users %d, ghost users %d, offline timed out %d, events %+v, offline p99 %.0f ms (limit %.0f)",
			res.GhostConnections, res.MissingUsers, res.GhostUsers, res.OfflineTimedOut, res.Events, res.OfflineLatency.P99, res.OfflineLimitMs)
	}
}

// testWriter sends progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}
