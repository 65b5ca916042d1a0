package load

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/bench/internal/stack"
)

// reliableEchoResponder stands in for a dispatcher with WithReliable: it
// consumes the inbound stream's ws.inq.echo, answers each envelope to its
// connection with its ref and acknowledges it.
func reliableEchoResponder(ctx context.Context, t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var stream jetstream.Stream
	for deadline := time.Now().Add(20 * time.Second); ; {
		if stream, err = js.Stream(ctx, "WS_INBOUND"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge did not create the inbound stream: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "echo", FilterSubject: "ws.inq.echo", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var env struct {
			Details    json.RawMessage `json:"details"`
			Ref        json.RawMessage `json:"ref"`
			Connection string          `json:"connection"`
		}
		if json.Unmarshal(m.Data(), &env) == nil {
			out, _ := json.Marshal(map[string]json.RawMessage{"action": json.RawMessage(`"echo"`), "details": env.Details, "ref": env.Ref})
			_ = nc.Publish("ws.send.conn."+env.Connection, out)
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// TestReliableRoundtripSmoke sends echoes as reliable actions through an
// edge with the inbound stream on: every one must be acknowledged once
// (durable, no duplicate) and answered once.
func TestReliableRoundtripSmoke(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	ns := runJetStream(t)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)

	const secret = "smoke-secret"
	st, err := stack.StartOnNATS(ctx, stack.Config{
		Edges: 1, BinDir: filepath.Dir(edgeBin), Secret: secret, SendQueue: 256, Dir: t.TempDir(),
		EdgeEnv: []string{"WS_INBOUND=memory"},
	}, ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop edge: %v", err)
		}
	})
	reliableEchoResponder(ctx, t, nc)

	res, err := Run(ctx, Config{
		Scenario: Roundtrip, Gateway: "wsgate", Conns: 20, Workers: 0, LocalIPs: 2, Reliable: true,
		Ramp: 200, Duration: 2 * time.Second, Rate: 200, Size: 64, Drain: 5 * time.Second,
		URLs: st.URLs, Secret: secret, Pids: st.Pids(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.Summary())
	if res.Sent < 300 || res.Lost != 0 || res.Duplicates != 0 || res.ClientErrors != 0 {
		t.Fatalf("sent %d, received %d, lost %d, duplicates %d, errors %d: %v", res.Sent, res.Received, res.Lost, res.Duplicates, res.ClientErrors, res.ErrorSamples)
	}
	if res.Acked != res.Sent || res.Unacked != 0 || res.AckDuplicates != 0 {
		t.Fatalf("sent %d, acked %d, unacked %d, duplicate acks %d", res.Sent, res.Acked, res.Unacked, res.AckDuplicates)
	}
	if a := res.AckLatency; a == nil || a.Count != res.Acked || a.P99 <= 0 || a.P50 > res.Latency.Max {
		t.Fatalf("implausible ack latency %+v (echo latency %+v)", a, res.Latency)
	}
	if !res.OK() {
		t.Fatalf("run not OK: %s", res.Summary())
	}
}
