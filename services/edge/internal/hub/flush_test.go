package hub

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// TestRun_ShareHandedOverAsTheHubStopsIsWritten: a broadcast large enough to
// be shared with the flush workers is routed while the hub's context ends.
// Every connection must still get its frame: a share handed to workers that
// have already stopped would leave its connections holding a right to write
// that nobody uses (their frames never go out, and their close lingers for
// the whole grace). Each round starts Run with the context already done and
// the broadcast waiting, so the router and the workers race the end.
func TestRun_ShareHandedOverAsTheHubStopsIsWritten(t *testing.T) {
	const conns, rounds, workers = 3 * inlineFlush, 40, 4
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var clients []*Client
	var peers []net.Conn
	for i := range conns {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer peer.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		conn := wsconn.New(server, 16, stats.New(nil, nil).Shard(), func(error) {})
		defer conn.Abort()
		c := NewClient(conn, "e1", strconv.Itoa(i), "127.0.0.1", "", "")
		c.identity.Store(&auth.Identity{User: "u" + strconv.Itoa(i)})
		clients = append(clients, c)
		peers = append(peers, peer)
	}
	frame := wsconn.TextFrame(wire.AppendServerFrame(nil, "news", nil, nil))
	routed := 0
	for round := range rounds {
		h := New(nil, Config{EdgeID: "e1", Subjects: wire.NewSubjects("ws"), PingInterval: 20 * time.Second, AuthTimeout: 10 * time.Second})
		h.workers, h.flushes = workers, make(chan wsconn.Batch, 4*workers)
		for _, c := range clients {
			h.clients[c.ID] = c
		}
		h.inbox <- &nats.Msg{Subject: "ws.send.all", Data: []byte(`{"action":"news"}`)}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		h.Run(ctx)
		if len(h.inbox) == 1 {
			continue // the router saw the end first: nothing was queued
		}
		routed++
		for i, peer := range peers {
			_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
			got := make([]byte, len(frame))
			if _, err := io.ReadFull(peer, got); err != nil {
				t.Fatalf("round %d: connection %d did not get the frame routed as the hub stopped: %v", round, i, err)
			}
		}
	}
	if routed == 0 {
		t.Fatalf("in %d rounds the router never routed before seeing the end", rounds)
	}
	t.Logf("%d of %d rounds routed the broadcast as the hub stopped", routed, rounds)
}
