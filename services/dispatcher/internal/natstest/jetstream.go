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
)

// RunJetStream is RunServer with JetStream on a temporary store.
func RunJetStream(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(Wait) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
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
