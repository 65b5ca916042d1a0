package hub

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// maxHeld bounds the live frames held for one connection while its
// recovery runs; past it the connection is closed as a slow consumer.
const maxHeld = 4096

// position is a connection's place in the history stream (DESIGN.md §8):
// the last sequence delivered to it, and while its recovery runs, the live
// stored messages that arrived meanwhile.
type position struct {
	mu         sync.Mutex
	recovering bool      // owned by mu: live stored frames are held
	replaying  bool      // owned by mu: a recovery runs on the connection's reader
	held       []heldMsg // owned by mu
	last       uint64    // owned by mu: highest sequence queued to the connection
	overflow   bool      // owned by mu: held reached maxHeld
	// outages is the hub's count of NATS disconnections when the hold
	// began, and duringOutage whether NATS was down then: a replay read
	// during an outage, or before one that began while it ran, misses
	// what the stream republished meanwhile.
	outages      uint64 // owned by mu
	duringOutage bool   // owned by mu
	// While recovering, the stream may be recreated (ResetPositions):
	// renewedAt is how many held frames came before (-1: it was not), and
	// renewedEpoch the new epoch.
	renewedAt    int    // owned by mu
	renewedEpoch string // owned by mu
}

// hold starts holding live frames, for a recovery or a catch-up, as of the
// hub's outage count outages.
func (p *position) hold(outages uint64) {
	p.recovering, p.held, p.overflow, p.renewedAt = true, nil, false, -1
	p.outages, p.duringOutage = outages, false
}

// outage is what the hub knows of its NATS connection's outages, for the
// holds (DESIGN.md §8: a recovery or a catch-up that a NATS outage cut
// short must be caught up again, never end in a silent gap).
type outage struct {
	count atomic.Uint64 // disconnections so far
	down  atomic.Bool   // between a disconnection and NATSBack
}

type heldMsg struct {
	frame []byte
	at    time.Time
	seq   uint64 // 0: a message that is not stored (a reply)
}

// BeginRecovery makes c hold its live messages until EndRecovery; it is
// called before the client's subscriptions exist, and the recovery runs on
// the connection's reader.
func (h *Hub) BeginRecovery(c *Client) {
	p := c.pos.Load()
	if p == nil {
		// Made on first use: with history off a connection carries none.
		c.pos.CompareAndSwap(nil, &position{})
		p = c.pos.Load()
	}
	p.mu.Lock()
	p.hold(h.outage.count.Load())
	p.duringOutage = h.outage.down.Load()
	p.replaying = true
	p.last = 0
	p.mu.Unlock()
}

// Replaying reports whether c's recovery runs on its reader, which then
// reads nothing (pongs included).
func (c *Client) Replaying() bool {
	p := c.pos.Load()
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.replaying
}

// EndRecovery ends c's hold (a recovery or a catch-up) after a replay: it
// queues the held messages that come after last (the connection's
// position: the replay's last sequence, the one it was told it starts
// from, or 0) in the stream of epoch (the one the replay read), in order,
// and turns the client live. live is false when too many arrived
// meanwhile: the connection is then to be closed as a slow consumer.
//
// again is true when NATS was down during the hold, so that the replay
// may have missed what the stream republished meanwhile: the client then
// stays on hold from last, its held frames with it, and must be caught up
// again (BeginCatchUp, EndRecovery) once NATS is back. The check is made
// under the position's lock, as HoldLive's, so that an outage is seen by
// one or the other.
//
// If the stream was recreated meanwhile, the frames held before that are
// the old stream's: queued after last when the replay read the old
// stream, then the new epoch is announced and its frames follow from 0;
// dropped when the replay read the new stream already.
func (h *Hub) EndRecovery(c *Client, epoch string, last uint64) (live, again bool) {
	p := c.pos.Load()
	if p == nil {
		return true, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.recovering {
		return true, false
	}
	p.replaying = false
	if n := h.outage.count.Load(); (p.duringOutage || n != p.outages) && !p.overflow && p.renewedAt < 0 {
		// The held frames stay held, in order: what the stream stored
		// during the outage comes between some of them, and the next
		// replay, from last, brings it (and those of them it also
		// stored, which EndRecovery then drops as replayed). A stream
		// recreated meanwhile is announced below instead: recovered:false
		// says a gap is possible.
		p.last, p.outages, p.duringOutage = last, n, false
		return true, true
	}
	p.recovering, p.last = false, last
	held, renewedAt := p.held, p.renewedAt
	p.held, p.renewedAt = nil, -1
	if p.overflow {
		return false, false
	}
	var err error
	switch {
	case renewedAt < 0:
		err = p.queueHeld(c, held)
	case epoch == p.renewedEpoch: // the replay read the new stream: what came before it is the old one's
		err = p.queueHeld(c, held[renewedAt:])
	default: // it read the old stream: its held frames follow its replay, then the new epoch from its start
		if err = p.queueHeld(c, held[:renewedAt]); err == nil {
			p.last = 0
			if err = c.Conn.Send(renewal(p.renewedEpoch)); err == nil {
				err = p.queueHeld(c, held[renewedAt:])
			}
		}
	}
	if errors.Is(err, wsconn.ErrQueueFull) {
		return false, false
	}
	return true, false
}

// queueHeld queues the held messages of msgs that come after p.last, in
// order, and returns the first error of the socket's queue.
func (p *position) queueHeld(c *Client, msgs []heldMsg) error {
	for _, m := range msgs {
		if m.seq != 0 {
			if m.seq <= p.last {
				continue // replayed already
			}
			p.last = m.seq
		}
		if err := c.Conn.Send(m.frame); err != nil {
			return err
		}
	}
	return nil
}

// renewal tells a connection that the stream was recreated under it, as
// epoch: what was published between the old stream's end and now may be
// gone.
func renewal(epoch string) []byte {
	return wsconn.TextFrame(wire.ServerFrame(wire.ActionRecovery, wire.Recovery{Epoch: epoch}))
}

// admit decides the fate of a live message for c, at position p: held
// during a recovery, stored or not (a reply must not pass the recovery's
// frames either); otherwise queued now (under the position's lock, so that
// it cannot pass a recovery's frames), or dropped when c already has it.
func (d *delivery) admit(c *Client, p *position) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.recovering:
		if p.overflow {
			return
		}
		if len(p.held) >= maxHeld {
			p.overflow = true
			p.held = nil
			d.s.SlowConsumer()
			c.Conn.Close(wire.CloseSlowConsumer, "slow consumer")
			return
		}
		p.held = append(p.held, heldMsg{frame: d.out.FrameFor(c.Conn), at: d.at, seq: d.seq})
		d.sent++
	case d.seq == 0:
		d.queue(c) // not stored: no position to compare
	case d.seq <= p.last:
		// Replayed already, or a stream that was recreated and whose new
		// sequences have not caught up (ResetPositions makes that brief).
	default:
		p.last = d.seq
		d.queue(c)
	}
}

// ResetPositions restarts every live connection's position after the
// history stream was recreated, and tells each the new epoch with
// recovered:false: what was published between the old stream's end and
// now may be gone. A connection whose recovery runs is told when it ends
// (EndRecovery).
func (h *Hub) ResetPositions(epoch string) {
	frame := renewal(epoch)
	for _, c := range h.snapshot(nil) {
		p := c.pos.Load()
		if c.Identity() == nil || p == nil {
			continue
		}
		p.mu.Lock()
		if p.recovering {
			// Told when its recovery ends (EndRecovery).
			if p.renewedAt < 0 {
				p.renewedAt = len(p.held)
			}
			p.renewedEpoch = epoch
		} else {
			p.last = 0
			_ = c.Conn.Send(frame)
		}
		p.mu.Unlock()
	}
}

// Matches reports whether a filter message is for c.
func (c *Client) Matches(f *wire.Filter) bool {
	id := c.Identity()
	if id == nil {
		return false
	}
	v, ok := c.property(id, f.Property)
	return ok && v == f.Value
}

// HoldLive puts every live connection on hold, as at the start of a
// recovery, and returns them: the edge lost its NATS connection, and the
// stored messages republished meanwhile must be replayed to them (each
// with BeginCatchUp, then EndRecovery) once NATS is back (NATSBack) before
// live ones go on. A connection on hold already is not returned: its
// EndRecovery says it must be caught up again.
func (h *Hub) HoldLive() []*Client {
	h.outage.down.Store(true)
	n := h.outage.count.Add(1)
	var held []*Client
	for _, c := range h.snapshot(nil) {
		p := c.pos.Load()
		if p == nil || c.Identity() == nil {
			continue
		}
		p.mu.Lock()
		if !p.recovering {
			p.hold(n)
			held = append(held, c)
		}
		p.mu.Unlock()
	}
	return held
}

// NATSBack says the edge's NATS connection is back: holds begun from now
// on read a stream that republishes to the edge again.
func (h *Hub) NATSBack() { h.outage.down.Store(false) }

// Outage returns how many times the edge lost NATS (HoldLive), and whether
// NATS is still away (no NATSBack since).
func (h *Hub) Outage() (count uint64, down bool) {
	return h.outage.count.Load(), h.outage.down.Load()
}

// BeginCatchUp starts the replay of a connection on hold for a catch-up
// and returns the last sequence it was given, where the replay starts.
// Only an outage from now on can make the replay miss something: one that
// came before it reads is in what it reads.
func (h *Hub) BeginCatchUp(c *Client) uint64 {
	p := c.pos.Load()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.outages, p.duringOutage = h.outage.count.Load(), h.outage.down.Load()
	return p.last
}
