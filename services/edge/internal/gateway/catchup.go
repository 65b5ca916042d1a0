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
	// mu orders held with the hub's outage state (Outage), which only
	// HoldLive and NATSBack change, both called under it.
	mu      sync.Mutex
	held    []*hub.Client // owned by mu: on hold since the last disconnection
	stopped bool          // owned by mu: Wait began; no new catch-up
	wg      sync.WaitGroup
}

// stop makes NATSReconnected start no more catch-ups, so that Wait's
// wg.Wait is never raced by an Add.
func (cu *catchUp) stop() {
	cu.mu.Lock()
	cu.stopped = true
	cu.mu.Unlock()
}

// NATSDisconnected holds the live stored messages of every connection
// (history on): whatever the stream republishes while the edge is away
// never reaches it, and must be replayed in order first.
func (g *Gateway) NATSDisconnected() {
	if g.cfg.History == nil {
		return
	}
	g.catchUp.mu.Lock()
	defer g.catchUp.mu.Unlock()
	g.catchUp.held = append(g.catchUp.held, g.hub.HoldLive()...)
}

// NATSReconnected replays to each held connection what it missed, once the
// edge's interest has settled, then lets its live messages go on. A
// connection that cannot be caught up completely gets Server/recovery with
// recovered:false. If NATS drops again before, the next reconnection does
// it.
func (g *Gateway) NATSReconnected() {
	if g.cfg.History == nil {
		return
	}
	g.catchUp.mu.Lock()
	if g.catchUp.stopped {
		g.catchUp.mu.Unlock()
		return
	}
	outages, _ := g.hub.Outage()
	g.catchUp.wg.Add(1)
	g.catchUp.mu.Unlock()
	go func() {
		defer g.catchUp.wg.Done()
		settle := time.NewTimer(catchUpSettle)
		<-settle.C
		g.catchUp.mu.Lock()
		if now, _ := g.hub.Outage(); now != outages {
			g.catchUp.mu.Unlock()
			return
		}
		g.hub.NATSBack()
		held := g.catchUp.held
		g.catchUp.held = nil
		g.catchUp.mu.Unlock()
		g.catchUpAll(held)
	}()
}

// catchUpAgain catches up c, whose replay NATS cut short (EndRecovery's
// again): with the others after the reconnection, or now if NATS is back.
func (g *Gateway) catchUpAgain(c *hub.Client) {
	g.catchUp.mu.Lock()
	if _, down := g.hub.Outage(); down {
		g.catchUp.held = append(g.catchUp.held, c)
		g.catchUp.mu.Unlock()
		return
	}
	g.catchUp.mu.Unlock()
	g.catchUpAll([]*hub.Client{c})
}

// catchUpAll catches up held, with at most catchUpWorkers goroutines.
func (g *Gateway) catchUpAll(held []*hub.Client) {
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
		for _, c := range held {
			work <- c
		}
		close(work)
	}()
}

// catchUpOne replays to c what the stream stored after the position it was
// given, then ends its hold. A connection that closed meanwhile is left.
func (g *Gateway) catchUpOne(c *hub.Client) {
	h := g.cfg.History
	id := c.Identity()
	if id == nil || !g.hub.Registered(c) {
		return
	}
	since := &wire.Since{Epoch: h.Epoch(), Seq: g.hub.BeginCatchUp(c)}
	res := h.Recover(context.Background(), since, targetsOf(c, id))
	last := res.Last
	if res.Reason != "" {
		g.cfg.Logger.Warn("connection not caught up after a NATS reconnection", "conn", c.Connection, "reason", res.Reason)
		// It goes on from where it was, in the same stream: what came
		// after may be missing, and it is told so.
		last = 0
		if res.Recovery.Epoch == since.Epoch {
			last = since.Seq
		}
		res.Recovery.Seq = last
		_ = c.Conn.Send(wsconn.TextFrame(wire.ServerFrame(wire.ActionRecovery, res.Recovery)))
	}
	g.endHold(c, res.Recovery.Epoch, last, sendPaced(c.Conn, res.Frames))
}

// endHold ends c's hold after its replay up to last in the stream of epoch
// (sent: the replay was queued whole). A connection that could not take it
// is closed as a slow consumer; one whose replay a NATS outage cut short is
// caught up again.
func (g *Gateway) endHold(c *hub.Client, epoch string, last uint64, sent bool) {
	live, again := g.hub.EndRecovery(c, epoch, last)
	if !sent || !live {
		if c.Conn.Close(wire.CloseSlowConsumer, "slow consumer") {
			g.cfg.Stats.SlowConsumer()
		}
		return
	}
	if again {
		g.catchUpAgain(c)
	}
}
