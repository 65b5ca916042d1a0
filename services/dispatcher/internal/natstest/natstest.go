// Package natstest gives the dispatcher's tests a real NATS: an in-process
// nats-server on a free loopback port, connections closed at cleanup, real
// inbound envelopes checked against api/schemas, and a capture of what is
// published to clients, checked against api/schemas too. Only tests import it.
package natstest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/schemacheck"
	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// Wait is how long helpers wait for something that should happen at once on
// a loopback NATS; only a failing test waits that long.
const Wait = 5 * time.Second

// RunServer starts a NATS server on 127.0.0.1 and a free port; it is shut
// down when the test ends (testkit.RunNATS).
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return testkit.RunNATS(t, nil)
}

// Connect returns a connection to s, closed when the test ends.
func Connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	return testkit.Connect(t, s.ClientURL(), nats.Name(t.Name()))
}

// CheckFor calls f every interval until it returns nil, and fails the test
// with f's last error if that does not happen within timeout
// (testkit.CheckFor).
func CheckFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	testkit.CheckFor(t, timeout, interval, f)
}

var checker = sync.OnceValues(schemacheck.New)

// Check validates data against the named schema (schemacheck.Envelope, ...).
func Check(t testing.TB, schema string, data []byte) {
	t.Helper()
	c, err := checker()
	if err != nil {
		t.Fatalf("schemas: %v", err)
	}
	if err := c.Check(schema, data); err != nil {
		t.Fatalf("%s\n%s", err, data)
	}
}

// Connection is the connection id of envelopes made by Envelope.
const Connection = "e1.c1"

var refs atomic.Int64

// Envelope returns an envelope as an edge publishes it, from user "u1" on
// connection Connection, with a fresh integer ref.
func Envelope(action string, details any) wire.Envelope {
	raw, err := json.Marshal(details)
	if err != nil {
		panic(fmt.Sprintf("natstest: details: %v", err))
	}
	return wire.Envelope{
		Action:     action,
		Details:    raw,
		Ref:        json.RawMessage(strconv.FormatInt(refs.Add(1), 10)),
		User:       "u1",
		Session:    "s1",
		Groups:     []string{"g1"},
		Language:   "en",
		Connection: Connection,
		Edge:       "e1",
		IP:         "127.0.0.1",
		UserAgent:  "natstest",
		TS:         time.Now().UTC().Truncate(time.Second),
	}
}

// Publish publishes env on <prefix>.in.<action> from nc, as an edge does,
// after checking it against envelope.json; it returns once NATS has it.
func Publish(t testing.TB, nc *nats.Conn, prefix string, env wire.Envelope) {
	t.Helper()
	data, err := json.Marshal(env)
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	Check(t, schemacheck.Envelope, data)
	PublishRaw(t, nc, wire.NewSubjects(prefix).In(env.Action), data)
}

// PublishWithHeader is Publish with NATS headers, as an edge sets them
// (wire.HeaderTraceparent, wire.HeaderMsgID, ...).
func PublishWithHeader(t testing.TB, nc *nats.Conn, prefix string, env wire.Envelope, hdr nats.Header) {
	t.Helper()
	data, err := json.Marshal(env)
	if err != nil {
		t.Fatalf("envelope: %v", err)
	}
	Check(t, schemacheck.Envelope, data)
	msg := &nats.Msg{Subject: wire.NewSubjects(prefix).In(env.Action), Data: data, Header: hdr}
	if err := nc.PublishMsg(msg); err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// PublishRaw publishes data on subject from nc and flushes.
func PublishRaw(t testing.TB, nc *nats.Conn, subject string, data []byte) {
	t.Helper()
	if err := nc.Publish(subject, data); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// Received is one message captured by a Capture.
type Received struct {
	Subject  string
	Data     []byte
	Outbound wire.Outbound // decoded for <prefix>.send.* subjects
}

// Capture records, in order, what is published on <prefix>.send.> and
// <prefix>.ctl.>: what the edges would deliver to clients.
type Capture struct {
	ch       chan *nats.Msg
	subjects wire.Subjects
}

// markerAction is the action of the messages Quiet publishes.
const markerAction = "natstest/marker"

// Subscribe starts a capture on nc; the server has the subscriptions when
// it returns.
func Subscribe(t testing.TB, nc *nats.Conn, prefix string) *Capture {
	t.Helper()
	c := &Capture{ch: make(chan *nats.Msg, 4096), subjects: wire.NewSubjects(prefix)}
	// One channel for both subjects keeps the order in which NATS delivered
	// them, which Quiet relies on.
	for _, subject := range []string{c.subjects.Prefix + ".send.>", c.subjects.Prefix + ".ctl.>"} {
		sub, err := nc.ChanSubscribe(subject, c.ch)
		if err != nil {
			t.Fatalf("subscribe %s: %v", subject, err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := nc.FlushWithContext(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	return c
}

// Next returns the next captured message; the payload of a send subject is
// checked against outbound.json and decoded.
func (c *Capture) Next(t testing.TB) Received {
	t.Helper()
	select {
	case m := <-c.ch:
		r := Received{Subject: m.Subject, Data: m.Data}
		if len(m.Data) > 0 {
			Check(t, schemacheck.Outbound, m.Data)
			out, err := wire.DecodeOutbound(m.Data)
			if err != nil {
				t.Fatalf("%s: %v", m.Subject, err)
			}
			r.Outbound = out
		}
		return r
	case <-time.After(Wait):
		t.Fatal("no message published to clients")
		return Received{}
	}
}

// Quiet proves that nothing else was published: it publishes a marker from
// nc and checks that the marker is the next message captured. NATS keeps the
// order of one connection's messages, so anything nc published before Quiet
// would arrive first.
func (c *Capture) Quiet(t testing.TB, nc *nats.Conn) {
	t.Helper()
	PublishRaw(t, nc, c.subjects.SendAll(), []byte(`{"action":"`+markerAction+`"}`))
	if r := c.Next(t); r.Outbound.Action != markerAction {
		t.Fatalf("unexpected message on %s: %s", r.Subject, r.Data)
	}
}

// ErrorDetails decodes the [code, message] details of an error response.
func ErrorDetails(t testing.TB, r Received) wire.Error {
	t.Helper()
	var e wire.Error
	if err := json.Unmarshal(r.Outbound.Details, &e); err != nil {
		t.Fatalf("%s: details %s: %v", r.Subject, r.Outbound.Details, err)
	}
	return e
}
