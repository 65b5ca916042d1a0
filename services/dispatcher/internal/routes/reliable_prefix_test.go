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

// A reliable action under a prefix route (issue 17) is forwarded like an
// exact route's: the 5xx is retried by the stream, the 2xx acknowledges it,
// the backend sees the client's message id. Mutation that fails it: no
// consumer for actions under a prefix (the action stays in the stream, the
// backend is never called).
func TestReliablePrefixRouteRetriedThenAcked(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		answerJSON(200, `{"action":"shop/paid","details":"ok"}`)(w, r, n)
	})
	table, err := routes.Parse([]byte(`{"routes": [{"prefix": "shop/", "url": "` + b.url + `", "retries": 3, "idempotent": true}]}`))
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.RunJetStream(t)
	edge, dnc := natstest.Connect(t, srv), natstest.Connect(t, srv)
	st := natstest.InboundStream(t, edge, "WS_INBOUND", "ws")
	capture := natstest.Subscribe(t, edge, "ws")
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

	natstest.PublishReliable(t, edge, "ws", natstest.Envelope("shop/pay", "x"), "u1.p1")
	if r := capture.Next(t); r.Outbound.Action != "shop/paid" {
		t.Fatalf("reply %s, want action shop/paid", r.Data)
	}
	natstest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		info, err := st.Info(context.Background())
		if err == nil && info.State.Msgs != 0 {
			err = fmt.Errorf("stream holds %d", info.State.Msgs)
		}
		return err
	})
	capture.Quiet(t, edge)
	if n := b.count(); n != 2 {
		t.Fatalf("backend hit %d times, want 2", n)
	}
	for i := range 2 {
		if h := b.hit(i); h.header.Get(routes.HeaderMsgID) != "u1.p1" || h.env.Action != "shop/pay" {
			t.Fatalf("hit %d: msg id %q, action %q", i, h.header.Get(routes.HeaderMsgID), h.env.Action)
		}
	}
}
