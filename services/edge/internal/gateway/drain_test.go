package gateway

import (
	"context"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/netpoll"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestDrain_UpgradesInHandOverAreNotMissed: clients keep upgrading while
// the gateway drains and the hub closes every client it has, as shutdown
// does, with nothing in between. A connection whose upgrade passed the
// draining check but that was not registered with the hub yet when the hub
// looked must not be missed: every upgraded client gets 1012. The window is
// short, so several gateways race at once.
func TestDrain_UpgradesInHandOverAreNotMissed(t *testing.T) {
	ns := edgetest.RunNATS(t)
	for i := range 6 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			drainRacingUpgrades(t, ns.ClientURL())
		})
	}
}

func drainRacingUpgrades(t *testing.T, natsURL string) {
	const dialers, perDialer, before = 24, 64, 50
	nc := edgetest.Connect(t, natsURL)
	h := hub.New(nc, hub.Config{EdgeID: "e1", Subjects: wire.NewSubjects("ws"), PingInterval: time.Minute, AuthTimeout: time.Minute})
	verifier, err := auth.NewVerifier(auth.Config{})
	if err != nil {
		t.Fatal(err)
	}
	poller := netpoll.New()
	go poller.Run()
	g := New(Config{
		EdgeID: "e1", Subjects: wire.NewSubjects("ws"), AllowAnonymous: true,
		MaxMessageBytes: 1024, SendQueue: 16, HandshakeTimeout: 10 * time.Second, Poller: poller,
	}, h, nc, verifier)
	srv := httptest.NewServer(g)
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	var upgraded, closed1012 atomic.Int64
	var clients, dials sync.WaitGroup
	var mu sync.Mutex
	var conns []*websocket.Conn
	for range dialers {
		dials.Go(func() {
			for range perDialer {
				ws, _, err := websocket.DefaultDialer.Dial(url, nil)
				if err != nil {
					return // refused with 503: draining
				}
				upgraded.Add(1)
				mu.Lock()
				conns = append(conns, ws)
				mu.Unlock()
				clients.Go(func() {
					for {
						if _, _, err := ws.ReadMessage(); err != nil {
							if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code == wire.CloseRestart {
								closed1012.Add(1)
							}
							return
						}
					}
				})
			}
		})
	}
	edgetest.Eventually(t, "clients upgrading", func() bool { return upgraded.Load() >= before })
	g.Drain()
	h.CloseAll(context.Background(), wire.CloseRestart, "edge is restarting", 0)
	dials.Wait()

	all := make(chan struct{})
	go func() { clients.Wait(); close(all) }()
	select {
	case <-all:
	case <-time.After(10 * time.Second):
		h.AbortAll() // the missed ones, so that the test can end
		mu.Lock()
		for _, ws := range conns {
			_ = ws.Close()
		}
		mu.Unlock()
		<-all
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("connections did not end: %v", err)
	}
	poller.Close()
	t.Logf("%d clients upgraded, %d closed 1012", upgraded.Load(), closed1012.Load())
	if closed1012.Load() != upgraded.Load() {
		t.Fatalf("%d of %d upgraded clients got 1012: the drain missed the others", closed1012.Load(), upgraded.Load())
	}
}
