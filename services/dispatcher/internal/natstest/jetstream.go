package natstest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// RunJetStream is RunServer with JetStream on a temporary store
// (testkit.RunJetStream).
func RunJetStream(t testing.TB) *server.Server {
	t.Helper()
	return testkit.RunJetStream(t)
}

// HistoryServer starts a JetStream server with the history stream as the
// edges make it (WS_HISTORY on the subjects of DESIGN.md §8, no prefix, in
// memory), and returns a connection to it.
func HistoryServer(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := Connect(t, RunJetStream(t))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WS_HISTORY", Subjects: wire.NewSubjects("").HistorySubjects(), Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatalf("history stream: %v", err)
	}
	return nc, js
}

// InboundStream creates the inbound stream as the edges do (DESIGN.md §8):
// a work queue on <prefix>.inq.> named name, with a dedupe window.
func InboundStream(t testing.TB, nc *nats.Conn, name, prefix string) jetstream.Stream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{wire.NewSubjects(prefix).InqAll()},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage, Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatalf("inbound stream: %v", err)
	}
	return st
}

// PublishReliable stores env on <prefix>.inq.<action> with Nats-Msg-Id
// msgID, as an edge does for a frame with a message id, and reports
// whether the stream took it as a duplicate.
func PublishReliable(t testing.TB, nc *nats.Conn, prefix string, env wire.Envelope, msgID string) bool {
	t.Helper()
	data, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	msg := &nats.Msg{Subject: wire.NewSubjects(prefix).Inq(env.Action), Data: data, Header: nats.Header{}}
	msg.Header.Set(wire.HeaderMsgID, msgID)
	ack, err := js.PublishMsg(ctx, msg)
	if err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
	return ack.Duplicate
}
