package edge_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
)

// inboundStream waits until an edge has created the inbound stream and
// returns it.
func inboundStream(t *testing.T, nc *nats.Conn, name string) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var st jetstream.Stream
	edgetest.Eventually(t, "inbound stream "+name, func() bool {
		st, err = js.Stream(context.Background(), name)
		return err == nil
	})
	return st
}

// subjectMsgs is how many messages the stream holds on subject.
func subjectMsgs(t *testing.T, st jetstream.Stream, subject string) uint64 {
	t.Helper()
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// expectAck reads the next frame and checks it is Server/ack for id with
// the given flags.
func expectAck(t *testing.T, c *edgetest.Client, id string, want wire.Ack) {
	t.Helper()
	f := c.Expect(wire.ActionAck)
	var got wire.Ack
	if err := json.Unmarshal(f.Details, &got); err != nil || got != want || string(f.Ref) != `"`+id+`"` {
		t.Fatalf("ack %s, want %+v for %q", f, want, id)
	}
}

var inboundOn = map[string]string{"WS_INBOUND": "memory", "WS_INBOUND_DEDUPE": "1m"}

// Mutations that fail it: acking before the stream answered (the message
// is not in the stream yet, or no 503 in the next test); dropping the
// Nats-Msg-Id header (the resends are stored again, duplicate false);
// keying it by connection instead of user (the resend from the second
// edge is stored again).
func TestReliableInbound_AckAfterStoreAndDuplicates(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	e1 := startEdge(t, ns, inboundOn)
	e2 := startEdge(t, ns, inboundOn)
	nc := edgetest.Connect(t, ns.ClientURL())
	st := inboundStream(t, nc, "WS_INBOUND")

	c := e1.dial(t, map[string]any{"sub": "u1"})
	c.SendRaw([]byte(`["work",{"n":1},"r1","m-1"]`))
	expectAck(t, c, "m-1", wire.Ack{Durable: true})
	msg, err := st.GetLastMsgForSubject(context.Background(), "ws.inq.work")
	if err != nil {
		t.Fatalf("acked but not stored: %v", err)
	}
	if got := msg.Header.Get(wire.HeaderMsgID); got != "u1.m-1" {
		t.Fatalf("Nats-Msg-Id %q, want u1.m-1", got)
	}
	env, err := wire.DecodeEnvelope(msg.Data)
	if err != nil || env.User != "u1" || string(env.Details) != `{"n":1}` || string(env.Ref) != `"r1"` {
		t.Fatalf("stored envelope %s (%v)", msg.Data, err)
	}

	// The same id again, on the same connection and from another edge.
	c.SendRaw([]byte(`["work",{"n":1},"r1","m-1"]`))
	expectAck(t, c, "m-1", wire.Ack{Duplicate: true, Durable: true})
	c2 := e2.dial(t, map[string]any{"sub": "u1"})
	c2.SendRaw([]byte(`["work",{"n":1},"r1","m-1"]`))
	expectAck(t, c2, "m-1", wire.Ack{Duplicate: true, Durable: true})
	// Another user's m-1 is another action.
	c3 := e2.dial(t, map[string]any{"sub": "u2"})
	c3.SendRaw([]byte(`["work",{"n":2},null,"m-1"]`))
	expectAck(t, c3, "m-1", wire.Ack{Durable: true})
	if n := subjectMsgs(t, st, "ws.inq.work"); n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
}

// Mutation that fails it: answering a publish error with Client/error or a
// close instead of Server/ack:error.
func TestReliableInbound_StreamDown503ConnectionStays(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	e := startEdge(t, ns, inboundOn)
	nc := edgetest.Connect(t, ns.ClientURL())
	inboundStream(t, nc, "WS_INBOUND")
	js, _ := jetstream.New(nc)
	if err := js.DeleteStream(context.Background(), "WS_INBOUND"); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t, map[string]any{"sub": "u1"})
	c.SendRaw([]byte(`["work",1,null,"m-2"]`))
	f := c.Expect(wire.ErrorAction(wire.ActionAck))
	if code, _ := f.Error(); code != 503 || string(f.Ref) != `"m-2"` {
		t.Fatalf("got %s, want [503, ...] for m-2", f)
	}
	c.Send(wire.ActionPing, nil, 5)
	c.Expect(wire.ActionPong)
}

// Mutation that fails it: publishing id frames to the stream subject (or
// not at all) when the stream is off.
func TestReliableInbound_OffIsCoreAndNotDurable(t *testing.T) {
	ns := edgetest.RunNATS(t)
	e := startEdge(t, ns, nil)
	nc := edgetest.Connect(t, ns.ClientURL())
	sub, err := nc.SubscribeSync("ws.in.work")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t, map[string]any{"sub": "u1"})
	c.SendRaw([]byte(`["work",1,null,"m-3"]`))
	expectAck(t, c, "m-3", wire.Ack{})
	if _, err := sub.NextMsg(edgetest.Timeout); err != nil {
		t.Fatalf("not published on ws.in.work: %v", err)
	}
}

// Mutation that fails it: taking any fourth element as the id (no 400),
// or not counting it as a bad frame (no 1008 on the second).
func TestReliableInbound_BadIDIsABadFrame(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	e := startEdge(t, ns, inboundOn)
	c := e.dial(t, map[string]any{"sub": "u1"})
	c.SendRaw([]byte(`["work",1,null,"a.b"]`))
	f := c.Expect(wire.ActionClientError)
	if code, msg := f.Error(); code != 400 || msg == "" {
		t.Fatalf("got %s, want [400, reason]", f)
	}
	c.SendRaw([]byte(`["work",1,null,""]`))
	if code, _ := c.WaitClose(); code != 1008 {
		t.Fatalf("second bad id closed with %d, want 1008", code)
	}
}

// Mutation that fails it: publishing lifecycle events on core NATS, or
// with a Nats-Msg-Id that is not per connection and kind.
func TestReliableInbound_LifecycleEventsStored(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	e := startEdge(t, ns, inboundOn)
	nc := edgetest.Connect(t, ns.ClientURL())
	st := inboundStream(t, nc, "WS_INBOUND")
	c := e.dial(t, map[string]any{"sub": "u1"})
	_ = c.WS.Close()
	var auth, disc *jetstream.RawStreamMsg
	edgetest.Eventually(t, "both lifecycle events stored", func() bool {
		var err1, err2 error
		auth, err1 = st.GetLastMsgForSubject(context.Background(), "ws.inq."+wire.ActionAuthentication)
		disc, err2 = st.GetLastMsgForSubject(context.Background(), "ws.inq."+wire.ActionDisconnection)
		return err1 == nil && err2 == nil
	})
	env, err := wire.DecodeEnvelope(auth.Data)
	if err != nil || env.User != "u1" {
		t.Fatalf("auth event %s (%v)", auth.Data, err)
	}
	if got, want := auth.Header.Get(wire.HeaderMsgID), env.Connection+".auth"; got != want {
		t.Fatalf("auth Nats-Msg-Id %q, want %q", got, want)
	}
	if got, want := disc.Header.Get(wire.HeaderMsgID), env.Connection+".disc"; got != want {
		t.Fatalf("disc Nats-Msg-Id %q, want %q", got, want)
	}
	for _, subject := range []string{"ws.inq." + wire.ActionAuthentication, "ws.inq." + wire.ActionDisconnection} {
		if n := subjectMsgs(t, st, subject); n != 1 {
			t.Fatalf("%s: %d messages, want 1", subject, n)
		}
	}
}

// After WS_INBOUND_DEDUPE the same id is a new action (README: "after the
// window the same id is a new action"). Mutation that fails it: a
// Duplicates window not taken from WS_INBOUND_DEDUPE (the default 2m never
// lets the resend through).
func TestReliableInbound_AfterTheDedupeWindowANewAction(t *testing.T) {
	ns := edgetest.RunJetStream(t)
	e := startEdge(t, ns, map[string]string{"WS_INBOUND": "memory", "WS_INBOUND_DEDUPE": "1s", "EDGE_RATE_LIMIT": "0"})
	nc := edgetest.Connect(t, ns.ClientURL())
	st := inboundStream(t, nc, "WS_INBOUND")
	c := e.dial(t, map[string]any{"sub": "u1"})
	first := time.Now()
	c.SendRaw([]byte(`["work",1,null,"w-1"]`))
	expectAck(t, c, "w-1", wire.Ack{Durable: true})
	// Within the window a resend is a duplicate (a window scaled down
	// would let it through).
	c.SendRaw([]byte(`["work",1,null,"w-1"]`))
	expectAck(t, c, "w-1", wire.Ack{Duplicate: true, Durable: true})
	edgetest.Eventually(t, "a resend stored again after the window", func() bool {
		c.SendRaw([]byte(`["work",1,null,"w-1"]`))
		var ack wire.Ack
		f := c.Expect(wire.ActionAck)
		_ = json.Unmarshal(f.Details, &ack)
		if !ack.Duplicate && time.Since(first) < time.Second {
			t.Fatalf("a resend after %v, within the 1s window, was stored again", time.Since(first))
		}
		return !ack.Duplicate
	})
	if n := subjectMsgs(t, st, "ws.inq.work"); n != 2 {
		t.Fatalf("stream holds %d, want 2", n)
	}
}
