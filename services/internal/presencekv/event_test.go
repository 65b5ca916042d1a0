package presencekv_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/services/internal/presencekv"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// TestPublishEvent_ThroughTheInboundStreamOnce: with reliable inbound on, a
// user event is stored in the inbound stream, and publishing it again with
// the same id (a retry, a second dispatcher) stores nothing more; with it
// off, the event is a core publish on the in subject.
func TestPublishEvent_ThroughTheInboundStreamOnce(t *testing.T) {
	nc := testkit.Connect(t, testkit.RunJetStream(t).ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "INQ", Subjects: []string{"ws.inq.>"}, Retention: jetstream.WorkQueuePolicy, Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := presencekv.PublishEvent(ctx, nc, []byte(`{"action":"Client/offline"}`), "offline.42.7", "ws.in.Client/offline", "ws.inq.Client/offline"); err != nil {
			t.Fatal(err)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("%d events stored, want 1", info.State.Msgs)
	}

	sub, err := nc.SubscribeSync("ws.in.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := presencekv.PublishEvent(ctx, nc, []byte(`{"action":"Client/online"}`), "online.42.8", "ws.in.Client/online", ""); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "ws.in.Client/online" || m.Header.Get(nats.MsgIdHdr) != "online.42.8" {
		t.Fatalf("core event on %s with id %q", m.Subject, m.Header.Get(nats.MsgIdHdr))
	}
}
