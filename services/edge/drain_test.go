package edge_test

import (
	"errors"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestDrain_UpgradesRacingShutdownGet1012OrRefusal: clients keep upgrading
// while the edge shuts down. Every client whose upgrade succeeds is closed
// with 1012 by the drain (none is missed because it was still being handed
// over when the drain looked), every other one is refused, and shutdown does
// not wait out its drain window plus margin (the abort that a missed client
// would cost).
func TestDrain_UpgradesRacingShutdownGet1012OrRefusal(t *testing.T) {
	const dialers, perDialer, before = 32, 40, 100
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, map[string]string{"EDGE_MAX_CONNECTIONS_PER_USER": "0", "EDGE_RATE_LIMIT": "0"})
	header := bearer(token(t, map[string]any{"sub": "alice"}))

	var upgraded atomic.Int64
	var mu sync.Mutex
	codes := map[int]int{} // close code → clients closed with it (-1: no close frame)
	var clients, dials sync.WaitGroup
	for range dialers {
		dials.Go(func() {
			for range perDialer {
				ws, _, err := websocket.DefaultDialer.Dial(e.URL, header)
				if err != nil {
					return // refused: 503, or the listener is gone
				}
				upgraded.Add(1)
				clients.Go(func() {
					defer ws.Close()
					code := -1
					for {
						if _, _, err := ws.ReadMessage(); err != nil {
							if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) {
								code = ce.Code
							}
							break
						}
					}
					mu.Lock()
					codes[code]++
					mu.Unlock()
				})
			}
		})
	}
	edgetest.Eventually(t, "clients upgrading", func() bool { return upgraded.Load() >= before })
	start := time.Now()
	e.stop()
	took := time.Since(start)
	dials.Wait()
	clients.Wait()

	var summary []int
	for code := range codes {
		summary = append(summary, code)
	}
	sort.Ints(summary)
	t.Logf("%d clients upgraded; close codes %v; shutdown took %v", upgraded.Load(), codes, took)
	if len(codes) != 1 || codes[1012] != int(upgraded.Load()) {
		t.Fatalf("close codes %v (of %d upgraded clients): every client must get 1012", codes, upgraded.Load())
	}
	// The drain window is 200 ms; shutdown waits for the clients' ends until
	// the window plus its margin (the close grace and a second: 3.2 s), then
	// aborts those left, as a client missed by the drain would be.
	if limit := 200*time.Millisecond + 3*time.Second; took >= limit {
		t.Fatalf("shutdown took %v, want less than %v", took, limit)
	}
	if e.status("/readyz") == http.StatusOK {
		t.Fatal("edge still ready after shutdown")
	}
}
