package load

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestCentrifugoPingsAreAnswered: Centrifugo's client protocol has the
// server send an empty command as a ping and, when the connect reply says
// "pong": true (its default), disconnect a client whose empty pong does not
// come within pong_timeout. A fake server speaking that protocol pings each
// connection of both client modes and must get the pong.
func TestCentrifugoPingsAreAnswered(t *testing.T) {
	for _, client := range []string{ClientEpoll, ClientGorilla} {
		t.Run(client, func(t *testing.T) {
			const conns = 5
			pongs := make(chan struct{}, conns)
			up := websocket.Upgrader{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ws, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer ws.Close()
				_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
				if _, msg, err := ws.ReadMessage(); err != nil || !bytes.Contains(msg, []byte(`"connect"`)) {
					return
				}
				reply := `{"id":1,"connect":{"client":"c","version":"6.9.1","subs":{"bench:all":{}},"ping":25,"pong":true}}`
				if ws.WriteMessage(websocket.TextMessage, []byte(reply)) != nil || ws.WriteMessage(websocket.TextMessage, []byte(`{}`)) != nil {
					return
				}
				for {
					_, msg, err := ws.ReadMessage()
					if err != nil {
						return
					}
					if string(bytes.TrimSpace(msg)) == "{}" {
						pongs <- struct{}{}
					}
				}
			}))
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			url := "ws" + strings.TrimPrefix(srv.URL, "http")
			w, err := NewWorker(Job{Gateway: "centrifugo", URLs: []string{url}, Secret: "s", Count: conns, Tabs: 1, RampRate: 500, Inflight: 4, Size: 64, Client: client})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			w.Ramp(ctx)
			if c := w.Counters(); c.Connected != conns || c.Failed != 0 {
				t.Fatalf("connected %d, failed %d: %v", c.Connected, c.Failed, w.ErrorSamples())
			}
			for i := range conns {
				select {
				case <-pongs:
				case <-ctx.Done():
					t.Fatalf("%d of %d connections answered the ping", i, conns)
				}
			}
		})
	}
}
