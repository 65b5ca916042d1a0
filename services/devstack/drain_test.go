package devstack_test

import (
	"net/http"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// TestSIGTERM_EdgeDrainsSpreadOverTheWindow: readiness turns 503 first, then
// every client gets 1012, the closes spread over EDGE_DRAIN_TIMEOUT, and the
// process exits 0 before the window plus a margin.
func TestSIGTERM_EdgeDrainsSpreadOverTheWindow(t *testing.T) {
	ns := edgetest.RunNATS(t)
	const window = 2 * time.Second
	p := start(t, "edge", "NATS_URL="+ns.ClientURL(), "EDGE_ADDR=127.0.0.1:0", "EDGE_ID=drain",
		"EDGE_JWT_SECRET="+secret, "EDGE_DRAIN_TIMEOUT="+window.String())
	addr := p.waitLog(t, "edge listening")["addr"].(string)
	const n = 20
	clients := make([]*edgetest.Client, n)
	for i := range clients {
		clients[i] = edgetest.Dial(t, "ws://"+addr+"/ws", http.Header(bearer(token(t, "u"))))
		clients[i].ExpectOK()
	}

	var mu sync.Mutex
	var notReady time.Time
	stopPolling := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stopPolling:
				return
			default:
			}
			resp, err := http.Get("http://" + addr + "/readyz")
			if err == nil {
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode == http.StatusServiceUnavailable {
				mu.Lock()
				if notReady.IsZero() {
					notReady = time.Now()
				}
				mu.Unlock()
				return
			}
			time.Sleep(2 * time.Millisecond) // polling interval of an outside prober
		}
	}()

	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	closes := make([]time.Time, n)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-c.Done()
			closes[i] = time.Now()
		}()
	}
	wg.Wait()
	for i, c := range clients {
		if code, _ := c.WaitClose(); code != 1012 {
			t.Fatalf("client %d closed with %d, want 1012", i, code)
		}
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("edge exited with %v", err)
		}
	case <-time.After(window + 5*time.Second):
		t.Fatal("edge did not exit within the drain window plus a margin")
	}
	close(stopPolling)
	<-polled
	sort.Slice(closes, func(i, j int) bool { return closes[i].Before(closes[j]) })
	mu.Lock()
	defer mu.Unlock()
	if notReady.IsZero() || notReady.After(closes[0]) {
		t.Fatalf("readiness did not turn 503 before the first close (503 at %v, first close at %v)", notReady.Sub(sent), closes[0].Sub(sent))
	}
	spread := closes[n-1].Sub(closes[0])
	t.Logf("first close %v, last close %v after SIGTERM; spread %v over a %v window", closes[0].Sub(sent), closes[n-1].Sub(sent), spread, window)
	if spread < window/2 {
		t.Fatalf("closes spread over %v, want most of the %v window", spread, window)
	}
}
