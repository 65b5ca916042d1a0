package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// catchUpSettle is how long a catch-up waits after the reconnection before
// it reads the stream: the edge's renewed interest needs that long to
// reach the other nodes of a cluster (what is republished before is lost
// on the way, and must be in the replay), and a node that just came back
// may answer from a stale state.
const catchUpSettle = time.Second

// catchUpWorkers bounds the goroutines of one catch-up; the history's
// replay slots bound the replays themselves.
const catchUpWorkers = 32

// catchUp is the state of the catch-ups after NATS reconnections.
type catchUp struct {
	mu   sync.Mutex
	held []*hub.Client // owned by mu: on hold since the last disconnection
	wg   sync.WaitGroup
}

// NATSDisconnected holds the live stored messages of every connection
// (history on): whatever the stream republishes while the edge is away
// never reaches it, and must be replayed in order first.
func (g *Gateway) NATSDisconnected() {
	if g.cfg.History == nil {
		return
	}
	held := g.hub.HoldLive()
	g.catchUp.mu.Lock()
	g.catchUp.held = append(g.catchUp.held, held...)
	g.catchUp.mu.Unlock()
}

// NATSReconnected replays to each held connection what it missed, then
// lets its live messages go on. A connection that cannot be caught up
// completely gets Server/recovery with recovered:false.
func (g *Gateway) NATSReconnected() {
	if g.cfg.History == nil {
		return
	}
	g.catchUp.mu.Lock()
	held := g.catchUp.held
	g.catchUp.held = nil
	g.catchUp.mu.Unlock()
	if len(held) == 0 {
		return
	}
	work := make(chan *hub.Client)
	for range min(catchUpWorkers, len(held)) {
		g.catchUp.wg.Add(1)
		go func() {
			defer g.catchUp.wg.Done()
			for c := range work {
				g.catchUpOne(c)
			}
		}()
	}
	g.catchUp.wg.Add(1)
	go func() {
		defer g.catchUp.wg.Done()
		settle := time.NewTimer(catchUpSettle)
		<-settle.C
		for _, c := range held {
			work <- c
		}
		close(work)
	}()
}

func (g *Gateway) catchUpOne(c *hub.Client) {
	h := g.cfg.History
	id := c.Identity()
	if id == nil {
		c.EndRecovery(h.Epoch(), 0)
		return
	}
	since := &wire.Since{Epoch: h.Epoch(), Seq: c.CatchUpSince()}
	res := h.Recover(context.Background(), since, targetsOf(c, id))
	last := res.Last
	if res.Reason != "" {
		g.cfg.Logger.Warn("connection not caught up after a NATS reconnection", "conn", c.Connection, "reason", res.Reason)
		_ = c.Conn.Send(wsconn.TextFrame(wire.ServerFrame(wire.ActionRecovery, res.Recovery)))
		last = 0
	}
	sent := sendPaced(c.Conn, res.Frames)
	if live := c.EndRecovery(res.Recovery.Epoch, last); (!sent || !live) && c.Conn.Close(wire.CloseSlowConsumer, "slow consumer") {
		g.cfg.Stats.SlowConsumer()
	}
}
