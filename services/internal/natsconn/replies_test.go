package natsconn_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/internal/natsconn"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// TestReplies_EveryAnswerOfABatchInOrderThenWaitsForItsContext: a batch of
// as many answers as the subscription holds arrives whole and in order;
// with none left, Next ends with its context; after Close nothing more is
// delivered.
func TestReplies_EveryAnswerOfABatchInOrderThenWaitsForItsContext(t *testing.T) {
	ns := testkit.RunNATS(t, nil)
	nc := testkit.Connect(t, ns.ClientURL())
	const batch = 300
	answer, err := nc.Subscribe("batch", func(m *nats.Msg) {
		for i := range batch {
			_ = nc.Publish(m.Reply, []byte(strconv.Itoa(i)))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = answer.Unsubscribe() }()
	r, err := natsconn.SubscribeReplies(nc, batch)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("batch", r.Inbox, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Let the whole batch arrive before reading: the channel must hold it.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	for i := range batch {
		m, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if string(m.Data) != strconv.Itoa(i) {
			t.Fatalf("answer %d is %q", i, m.Data)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if m, err := r.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("past the batch: %v, %v; want the context's deadline", m, err)
	}
	r.Close()
	if err := nc.Publish(r.Inbox, []byte("late")); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel2()
	if m, err := r.Next(short2); err == nil {
		t.Fatalf("after Close: got %q", m.Data)
	}
}
