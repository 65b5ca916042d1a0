package routes_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/natstest"
	"github.com/wsgate/wsgate/services/dispatcher/internal/routes"
)

// Reliable actions through an HTTP route (DESIGN.md §8): a 2xx acknowledges,
// a 4xx is a refusal, a 5xx or a timeout is retried by the stream (one
// request per delivery, whatever the route's own retries), and the last
// failure is the client's error reply and a dead letter; a route that is
// not idempotent fails at once (one request). Mutations that fail it:
// keeping the route's own retries for reliable actions (4 or 9 hits), a
// 5xx counted as a refusal (1 hit, no retry), or a failure of a route that
// is not idempotent left to the stream's retries (3 hits).
func TestReliableRouteAcksOn2xxRetriesOn5xx(t *testing.T) {
	tests := []struct {
		name       string
		answer     func(w http.ResponseWriter, r *http.Request, n int)
		wantHits   int
		want       string // the one reply the client gets
		dead       bool
		idempotent bool
	}{
		{"2xx after a 5xx", func(w http.ResponseWriter, r *http.Request, n int) {
			if n == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			answerJSON(200, `{"action":"hello","details":"stored"}`)(w, r, n)
		}, 2, "hello", false, true},
		{"4xx is a refusal", answerJSON(409, `{"error":"taken"}`), 1, "hello:error", false, true},
		{"5xx every time", answerJSON(500, ""), 3, "hello:error", true, true},
		// A route that is not idempotent is never sent twice: its failure,
		// a 5xx or a 2xx it cannot read, is final at once.
		{"5xx, not idempotent", answerJSON(500, ""), 1, "hello:error", true, false},
		{"unreadable 2xx, not idempotent", answerJSON(200, `{"action":`), 1, "hello:error", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t, tt.answer)
			opts := `, "retries": 3, "idempotent": true`
			if !tt.idempotent {
				opts = ``
			}
			table, err := routes.Parse([]byte(route("hello", b.url, opts)))
			if err != nil {
				t.Fatal(err)
			}
			srv := natstest.RunJetStream(t)
			edge, dnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
			st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
			capture := natstest.Subscribe(t, edge, "ws")
			dead, err := edge.SubscribeSync("ws.dead.hello")
			if err != nil {
				t.Fatal(err)
			}
			fwd, err := routes.NewForwarder(table, routes.Options{Secret: []byte(secret)})
			if err != nil {
				t.Fatal(err)
			}
			d, err := dispatcher.New(dnc, dispatcher.WithReliable(dispatcher.ReliableOptions{
				MaxDeliver: 3, Backoff: []time.Duration{50 * time.Millisecond}, AckWait: 10 * time.Second,
			}))
			if err != nil {
				t.Fatal(err)
			}
			if err := fwd.Register(d); err != nil {
				t.Fatal(err)
			}
			if err := d.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), natstest.Wait)
				defer cancel()
				_ = d.Drain(ctx)
				fwd.Close()
			})

			natstest.PublishReliable(t, edge, "ws", natstest.Envelope("hello", "x"), "u1.h1")
			if r := capture.Next(t); r.Outbound.Action != tt.want {
				t.Fatalf("reply %s, want action %s", r.Data, tt.want)
			}
			natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
				info, err := st.Info(context.Background())
				if err == nil && info.State.Msgs != 0 {
					err = fmt.Errorf("stream holds %d", info.State.Msgs)
				}
				return err
			})
			capture.Quiet(t, edge)
			if n := b.count(); n != tt.wantHits {
				t.Fatalf("backend hit %d times, want %d", n, tt.wantHits)
			}
			if b.hit(0).header.Get(routes.HeaderMsgID) != "u1.h1" {
				t.Fatalf("msg id header %q", b.hit(0).header.Get(routes.HeaderMsgID))
			}
			if n, _, _ := dead.Pending(); (n == 1) != tt.dead || n > 1 {
				t.Fatalf("%d dead letters", n)
			}
		})
	}
}
