package edge_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// stormClients is how many clients TestStorm_ connects within stormWindow.
// The issue asks for 10,000; make test runs 2,000 because on the 2 cores
// it shares with everything else 10,000 clients and their edge take most
// of a minute and nearly all of the 20,000 files the test process may
// open. Run the full storm with -storm.clients=10000.
var stormClients = flag.Int("storm.clients", 2000, "clients of TestStorm_ (the issue's figure: 10000)")

const (
	stormWindow      = 2 * time.Second
	stormConcurrency = 256                    // EDGE_AUTH_CONCURRENCY of the test
	stormQueue       = 1024                   // EDGE_AUTH_QUEUE of the test
	stormCallout     = 100 * time.Millisecond // how long the application takes to answer
	// stormRTTBound is the round trip established connections must keep
	// while the storm lasts: generous, for a loaded 2-core machine running
	// the whole suite with -race (seen there: p99 0.4 s, max 4.5 s); the
	// figure worth reading is the logged p99. An edge whose workers all
	// wait on authentications stalls them for the whole storm.
	stormRTTBound = 10 * time.Second
	// stormSlack is the goroutines allowed besides the budget's and the
	// handshakes in flight: NATS, HTTP, poller workers, timers.
	stormSlack = 300
)

// raiseFileLimit lifts the soft limit of open files to the hard one: the
// test process holds both ends of every connection.
func raiseFileLimit(t *testing.T) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		old := lim.Cur
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: old, Max: lim.Max}) })
	}
	return lim.Cur
}

// TestStorm_ClientsAuthenticateWithinBoundedGoroutinesAndLatency: a
// reconnect storm, as when another edge drains its clients here: clients
// arrive within 2 s, half with JWKS tokens (the key set not fetched yet:
// the first of them share one fetch), half with cookies the application
// identifies through the callout in 100 ms. Every one authenticates (those
// refused 1013 retry, as the JS client does), the edge's goroutines stay
// under the authentication budget plus the handshakes in flight plus a
// fixed slack, and established connections keep their round trip under
// stormRTTBound meanwhile.
func TestStorm_ClientsAuthenticateWithinBoundedGoroutinesAndLatency(t *testing.T) {
	n := *stormClients
	if files := raiseFileLimit(t); files < uint64(2*n+200) {
		t.Fatalf("open files limited to %d: %d clients need %d", files, n, 2*n+200)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	key := signingKey{"k1", jwt.SigningMethodEdDSA, priv}
	idp := &jwksServer{}
	idp.rotate(key)
	jwks := httptest.NewServer(idp)
	defer jwks.Close()

	ns := edgetest.RunNATS(t)
	app := edgetest.Connect(t, ns.ClientURL())
	var asked atomic.Int64
	var answers sync.WaitGroup
	defer answers.Wait()
	sub, err := app.Subscribe("app.auth", func(m *nats.Msg) {
		asked.Add(1)
		var req wire.CalloutRequest
		_ = json.Unmarshal(m.Data, &req)
		data, _ := json.Marshal(wire.CalloutResponse{User: "c-" + req.Cookies["sid"]})
		answers.Add(1)
		time.AfterFunc(stormCallout, func() { defer answers.Done(); _ = m.Respond(data) })
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := app.Flush(); err != nil {
		t.Fatal(err)
	}
	e := startEdge(t, ns, map[string]string{
		"EDGE_JWT_SECRET": "", "EDGE_JWT_JWKS_URL": jwks.URL,
		"EDGE_AUTH_CALLOUT_SUBJECT": "app.auth", "EDGE_AUTH_CALLOUT_TIMEOUT": "10s", "EDGE_AUTH_CALLOUT_CACHE_SIZE": "0",
		"EDGE_AUTH_CONCURRENCY": strconv.Itoa(stormConcurrency), "EDGE_AUTH_QUEUE": strconv.Itoa(stormQueue),
		"EDGE_MAX_CONNECTIONS_PER_USER": "0", "EDGE_AUTH_TIMEOUT": "60s", "EDGE_RATE_LIMIT": "0",
	})

	// Established connections measure round trips through the edge.
	const pingers = 4
	var rtts latencies
	var rttMu sync.Mutex
	pingerErrs := make(chan error, pingers) // an established connection the storm broke
	stop := make(chan struct{})
	var background sync.WaitGroup
	for i := range pingers {
		ws, _, err := websocket.DefaultDialer.Dial(e.URL, bearer(key.token(t, "established-"+strconv.Itoa(i))))
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if _, data, err := ws.ReadMessage(); err != nil || string(data) != `["Client/authentication","ok"]` {
			t.Fatalf("established client: %s %v", data, err)
		}
		background.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				if err := ws.WriteMessage(websocket.TextMessage, []byte(`["Client/ping",null]`)); err != nil {
					pingerErrs <- fmt.Errorf("write: %w", err)
					return
				}
				if _, _, err := ws.ReadMessage(); err != nil {
					pingerErrs <- fmt.Errorf("read: %w", err)
					return
				}
				rttMu.Lock()
				rtts = append(rtts, time.Since(start))
				rttMu.Unlock()
			}
		})
	}

	// Goroutines: the test's own clients are counted and left out.
	var active, dialing atomic.Int64
	base := runtime.NumGoroutine()
	var maxEdge, maxDialing int64
	var sampleMu sync.Mutex
	background.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			d := dialing.Load()
			edge := int64(runtime.NumGoroutine()-base) - active.Load()
			sampleMu.Lock()
			maxEdge, maxDialing = max(maxEdge, edge), max(maxDialing, d)
			sampleMu.Unlock()
		}
	})

	conns := make([]*websocket.Conn, n)
	defer func() {
		for _, ws := range conns {
			if ws != nil {
				_ = ws.Close()
			}
		}
	}()
	var retries, failed atomic.Int64
	deadline := time.Now().Add(stormWindow + 120*time.Second)
	connect := func(i int) {
		defer active.Add(-1)
		header := cookie("s" + strconv.Itoa(i))
		if i%2 == 0 {
			header = bearer(key.token(t, "j-"+strconv.Itoa(i)))
		}
		for time.Now().Before(deadline) {
			dialing.Add(1)
			ws, _, err := websocket.DefaultDialer.Dial(e.URL, header)
			dialing.Add(-1)
			if err != nil {
				retries.Add(1)
				continue
			}
			_ = ws.SetReadDeadline(deadline)
			_, data, err := ws.ReadMessage()
			if err == nil && string(data) == `["Client/authentication","ok"]` {
				_ = ws.SetReadDeadline(time.Time{})
				conns[i] = ws
				return
			}
			_ = ws.Close() // refused (1013): try again
			retries.Add(1)
		}
		failed.Add(1)
	}
	start := time.Now()
	var clients sync.WaitGroup
	tick := time.NewTicker(5 * time.Millisecond)
	for launched := 0; launched < n; {
		now := <-tick.C
		due := min(n, int(float64(n)*float64(now.Sub(start))/float64(stormWindow))+1)
		for ; launched < due; launched++ {
			active.Add(1)
			i := launched
			clients.Go(func() { connect(i) })
		}
	}
	tick.Stop()
	launchedIn := time.Since(start)
	clients.Wait()
	took := time.Since(start)
	close(stop)
	background.Wait()
	close(pingerErrs)
	for err := range pingerErrs {
		t.Fatalf("an established connection broke during the storm: %v", err)
	}

	bound := int64(stormConcurrency+stormQueue+stormSlack) + 2*maxDialing
	p50, p99, maxRTT := rtts.summary()
	t.Logf("%d clients launched in %v, all authenticated after %v (%d retries, %d failed); callout asked %d times, JWKS fetched %d times",
		n, launchedIn.Round(time.Millisecond), took.Round(time.Millisecond), retries.Load(), failed.Load(), asked.Load(), idp.fetches.Load())
	t.Logf("edge goroutines at most %d over a baseline of %d (bound %d: budget %d + queue %d + 2 × %d handshakes in flight + %d)",
		maxEdge, base, bound, stormConcurrency, stormQueue, maxDialing, stormSlack)
	t.Logf("established round trips during the storm: p50 %v p99 %v max %v (n=%d)", p50, p99, maxRTT, len(rtts))
	if failed.Load() > 0 {
		t.Fatalf("%d of %d clients never authenticated", failed.Load(), n)
	}
	if maxEdge > bound {
		t.Errorf("edge goroutines reached %d, bound %d", maxEdge, bound)
	}
	if len(rtts) == 0 || maxRTT > stormRTTBound {
		t.Errorf("established round trip max %v (n=%d), bound %v", maxRTT, len(rtts), stormRTTBound)
	}
	if got := idp.fetches.Load(); got != 1 {
		t.Errorf("JWKS fetched %d times, want 1: the storm's misses share one fetch", got)
	}
	if e.status("/readyz") != http.StatusOK {
		t.Error("edge not ready after the storm")
	}
}
