package inbound_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/inbound"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// results collects what Publish's callbacks report.
type results chan inbound.Result

func (r results) next(t *testing.T) inbound.Result {
	t.Helper()
	select {
	case res := <-r:
		return res
	case <-time.After(edgetest.Timeout):
		t.Fatal("no result")
		return inbound.Result{}
	}
}

// The publisher completes each publish once, from the stream's answer, its
// absence or Close. Mutations that fail it: no timer (the silent subject
// never completes), reading "duplicate" wrong, Close not waiting for the
// answers in flight.
func TestPublisher_AnswersTimeoutsAndClose(t *testing.T) {
	ns := edgetest.RunNATS(t)
	nc := edgetest.Connect(t, ns.ClientURL())
	stream := edgetest.Connect(t, ns.ClientURL()) // plays the stream
	release := make(chan struct{})
	subs := map[string]nats.MsgHandler{
		"ws.inq.dup":  func(m *nats.Msg) { _ = m.Respond([]byte(`{"stream":"S","seq":1,"duplicate":true}`)) },
		"ws.inq.err":  func(m *nats.Msg) { _ = m.Respond([]byte(`{"error":{"code":503,"description":"no leader"}}`)) },
		"ws.inq.slow": func(m *nats.Msg) { go func() { <-release; _ = m.Respond([]byte(`{"stream":"S","seq":2}`)) }() },
		"ws.inq.mute": func(*nats.Msg) {},
	}
	for subject, h := range subs {
		if _, err := stream.Subscribe(subject, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Flush(); err != nil {
		t.Fatal(err)
	}
	p, err := inbound.NewPublisher(nc, 300*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := make(results, 10)
	publish := func(subject string) {
		t.Helper()
		if err := p.Publish(&nats.Msg{Subject: subject, Header: nats.Header{}}, func(r inbound.Result) { out <- r }); err != nil {
			t.Fatal(err)
		}
	}

	publish("ws.inq.dup")
	if r := out.next(t); r.Err != nil || !r.Duplicate {
		t.Fatalf("dup: %+v", r)
	}
	publish("ws.inq.err")
	if r := out.next(t); !errors.Is(r.Err, inbound.ErrUnavailable) {
		t.Fatalf("err: %+v", r)
	}
	publish("ws.inq.none") // no responder: NATS answers 503 at once
	if r := out.next(t); !errors.Is(r.Err, inbound.ErrUnavailable) {
		t.Fatalf("no stream: %+v", r)
	}
	publish("ws.inq.mute")
	if r := out.next(t); !errors.Is(r.Err, inbound.ErrTimeout) {
		t.Fatalf("mute: %+v", r)
	}

	// Close waits for the answer in flight, then refuses new publishes.
	publish("ws.inq.slow")
	closed := make(chan struct{})
	go func() { p.Close(context.Background()); close(closed) }()
	time.AfterFunc(50*time.Millisecond, func() { close(release) })
	if r := out.next(t); r.Err != nil || r.Duplicate {
		t.Fatalf("slow: %+v", r)
	}
	<-closed
	if err := p.Publish(&nats.Msg{Subject: "ws.inq.dup", Header: nats.Header{}}, func(inbound.Result) {}); !errors.Is(err, inbound.ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	if n := p.Pending(); n != 0 {
		t.Fatalf("%d pending after Close", n)
	}
}
