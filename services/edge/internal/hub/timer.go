package hub

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// The hub has one timer for all its connections, and it does not visit every
// connection on every tick: an idle edge's cost is the pings it must send,
// not a scan of its registry.
//
//   - Liveness: clients are spread over rounds of slots, one slot visited per
//     tick, so that each client is visited once per PingInterval: it is
//     pinged then, or dropped when it has been silent since before the
//     previous visit. The pings of an edge go out evenly over the interval
//     instead of in one burst.
//   - Deadlines: a heap holds each client's next deadline (authentication
//     timeout, token expiry, or the grace of an unanswered close frame), so
//     a tick looks only at the clients that are due.

// Kinds of deadline.
const (
	deadlineNone  uint8 = iota
	deadlineAuth        // not authenticated within AuthTimeout: close 4408
	deadlineExp         // the identity's token expired: close 4001
	deadlineClose       // our close frame went unanswered: abort
)

// timerState is a client's place in the timer; owned by timer.mu.
type timerState struct {
	in            bool // added and not removed
	slot, slotPos int
	deadline      time.Time
	kind          uint8
	heapPos       int // index in timer.due; -1 when not there
}

// timer is the hub's clock. Its mutex is a leaf: nothing else is locked
// while it is held, so it may be taken from anywhere (under Hub.mu, or by
// a writer that just sent a close frame).
type timer struct {
	period time.Duration // static: tick period
	slots  int           // static: slots per round; a round is about PingInterval

	mu    sync.Mutex
	round [][]*Client // by slot; owned by mu
	next  int         // owned by mu: the slot of the next client added
	due   deadlines   // owned by mu
}

// maxTick is the longest tick. Shorter ticks would spread pings thinner
// still, but each ping's answer would then wake the edge (and the client) on
// its own: at a tenth of a second, idle CPU per connection rose by half.
const maxTick = time.Second

func newTimer(pingInterval, authTimeout time.Duration) *timer {
	period := max(min(pingInterval/4, authTimeout/4, maxTick), 5*time.Millisecond)
	slots := max(1, int((pingInterval+period/2)/period))
	return &timer{period: period, slots: slots, round: make([][]*Client, slots)}
}

// add places a new client in a slot and schedules its authentication timeout.
func (t *timer) add(c *Client, authTimeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &c.timer
	s.in, s.slot, s.slotPos, s.heapPos = true, t.next, len(t.round[t.next]), -1
	t.round[t.next] = append(t.round[t.next], c)
	t.next = (t.next + 1) % t.slots
	t.setLocked(c, c.created.Add(authTimeout), deadlineAuth)
}

// remove takes c out of the timer.
func (t *timer) remove(c *Client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := &c.timer
	if !s.in {
		return
	}
	slot := t.round[s.slot]
	last := len(slot) - 1
	slot[s.slotPos] = slot[last]
	slot[s.slotPos].timer.slotPos = s.slotPos
	slot[last] = nil
	t.round[s.slot] = slot[:last]
	t.setLocked(c, time.Time{}, deadlineNone)
	s.in = false
}

// identityChanged schedules what c's current identity needs: its expiry, or
// the authentication timeout when it has none. A closing client keeps its
// close deadline.
func (t *timer) identityChanged(c *Client, authTimeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.timer.in || c.timer.kind == deadlineClose {
		return
	}
	switch id := c.Identity(); {
	case id == nil:
		t.setLocked(c, c.created.Add(authTimeout), deadlineAuth)
	case id.Expires.IsZero():
		t.setLocked(c, time.Time{}, deadlineNone)
	default:
		t.setLocked(c, id.Expires, deadlineExp)
	}
}

// closeSent gives c CloseGrace from now to answer our close frame.
func (t *timer) closeSent(c *Client) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.timer.in {
		return
	}
	t.setLocked(c, time.Now().Add(wsconn.CloseGrace), deadlineClose)
}

// setLocked makes at (of kind) c's one deadline; deadlineNone removes it.
func (t *timer) setLocked(c *Client, at time.Time, kind uint8) {
	s := &c.timer
	s.deadline, s.kind = at, kind
	switch {
	case kind == deadlineNone && s.heapPos >= 0:
		heap.Remove(&t.due, s.heapPos)
	case kind == deadlineNone:
	case s.heapPos >= 0:
		heap.Fix(&t.due, s.heapPos)
	default:
		heap.Push(&t.due, c)
	}
}

// expired is a deadline that came due.
type expired struct {
	c    *Client
	kind uint8
}

// popDue appends the deadlines due at now, which leave the heap.
func (t *timer) popDue(now time.Time, due []expired) []expired {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.due) > 0 && !now.Before(t.due[0].timer.deadline) {
		c := heap.Pop(&t.due).(*Client)
		due = append(due, expired{c: c, kind: c.timer.kind})
		c.timer.kind = deadlineNone
	}
	return due
}

// slot appends the clients of slot i.
func (t *timer) slot(i int, visit []*Client) []*Client {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append(visit, t.round[i]...)
}

// deadlines is a min-heap of clients by deadline (container/heap).
type deadlines []*Client

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].timer.deadline.Before(d[j].timer.deadline) }
func (d deadlines) Swap(i, j int) {
	d[i], d[j] = d[j], d[i]
	d[i].timer.heapPos, d[j].timer.heapPos = i, j
}
func (d *deadlines) Push(x any) {
	c := x.(*Client)
	c.timer.heapPos = len(*d)
	*d = append(*d, c)
}
func (d *deadlines) Pop() any {
	old := *d
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*d = old[:len(old)-1]
	c.timer.heapPos = -1
	return c
}

// CloseSent tells the timer that c's close frame is out: the peer has
// CloseGrace to answer it before the connection is aborted.
func (h *Hub) CloseSent(c *Client) { h.timer.closeSent(c) }

// tick runs the timer until ctx is done.
func (h *Hub) tick(ctx context.Context) {
	t := h.timer
	// A client is visited once per round. A peer that answers the ping of
	// one visit has been heard from within a round at the next; a dead one
	// is dropped at the visit after that, about two rounds after its last
	// sign of life. The margin over a round forgives a visit made late by a
	// stalled machine (5 s at the default interval).
	round := time.Duration(t.slots) * t.period
	deadAfter := round + max(t.period, round/4)
	ticker := time.NewTicker(t.period)
	defer ticker.Stop()
	start := time.Now()
	visited := 0 // visits made since start; visit v is of slot v % slots
	var visit []*Client
	var due []expired
	var pings wsconn.Batch
	routed := h.routed.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			// Visits missed while the machine stalled are made now, but
			// each slot at most once.
			upTo := int(now.Sub(start) / t.period)
			visited = max(visited, upTo-t.slots)
			due = t.popDue(now, due[:0])
			for visit = visit[:0]; visited < upTo; visited++ {
				visit = t.slot(visited%t.slots, visit)
			}
			for _, e := range due {
				h.expire(e, now)
			}
			r := h.routed.Load()
			busy := r != routed
			routed = r
			var ok bool
			ok = h.ping(ctx, visit, now, deadAfter, pingChunkSize(len(visit), t.period, busy), pingPause, &pings)
			clear(visit)
			clear(due)
			if !ok {
				return
			}
		}
	}
}

// While deliveries flow, a tick's pings go out a chunk at a time with a
// pause between chunks, so that the pongs (and on a machine shared with the
// peers, their work) come in small waves between deliveries rather than in
// one wave that delays every message of that moment: at 12,000 messages a
// second to 10,000 connections, the 99th percentile of delivery went from
// 4.1-5.9 ms to 3.0-4.0 ms (four pairs of runs of the load tool). An edge
// that routed nothing since the last tick sends them at once: one wave of
// pongs costs less CPU than many (with waves on an idle edge, its CPU per
// connection rose by 7-60 % in three pairs). The pauses of a tick take at
// most a quarter of its period: larger ticks get larger chunks.
const (
	pingChunk = 32
	pingPause = time.Millisecond
)

// pingChunkSize is the size of the chunks of a tick visiting n clients;
// busy tells whether deliveries flow.
func pingChunkSize(n int, period time.Duration, busy bool) int {
	if !busy {
		return max(1, n)
	}
	pauses := max(1, int(period/4/pingPause))
	return max(pingChunk, (n+pauses-1)/pauses)
}

// ping visits the clients chunk at a time, pausing between chunks, each
// chunk's pings written through b; it returns false if ctx ended meanwhile. A
// ping is queued just before its chunk is written: a client waiting for
// its turn keeps no claim on its connection's writing, so a delivery
// meanwhile goes out at once.
func (h *Hub) ping(ctx context.Context, visit []*Client, now time.Time, deadAfter time.Duration, chunk int, pause time.Duration, b *wsconn.Batch) bool {
	var wait *time.Timer
	defer func() {
		if wait != nil {
			wait.Stop()
		}
	}()
	for len(visit) > 0 {
		part := visit[:min(chunk, len(visit))]
		visit = visit[len(part):]
		for _, c := range part {
			h.visit(c, now, deadAfter, b)
		}
		// Written here, not shared with the flush workers: a tick's
		// pings take one core at most, never the router's.
		b.Flush()
		if len(visit) == 0 {
			break
		}
		if wait == nil {
			wait = time.NewTimer(pause)
		} else {
			wait.Reset(pause)
		}
		select {
		case <-ctx.Done():
			return false
		case <-wait.C:
		}
	}
	return true
}

// expire acts on a deadline that came due.
func (h *Hub) expire(e expired, now time.Time) {
	c := e.c
	switch e.kind {
	case deadlineClose:
		c.Conn.Abort()
	case deadlineAuth:
		if c.Identity() == nil {
			c.Conn.Close(wire.CloseAuthTimeout, "authentication timeout")
		}
	case deadlineExp:
		if id := c.Identity(); id != nil && !id.Expires.IsZero() && !now.Before(id.Expires) {
			c.Conn.Close(wire.CloseTokenExpired, "token expired")
		}
	}
}

// visit drops c if it has been silent too long, or pings it through b. A
// recovering client is only pinged: its recovery runs on its reader, which
// reads nothing meanwhile (pongs included), and has bounds of its own
// (EDGE_HISTORY_REPLAY_WAIT and _TIMEOUT, then the replay's write timeout).
func (h *Hub) visit(c *Client, now time.Time, deadAfter time.Duration, b *wsconn.Batch) {
	if now.Sub(c.Conn.LastSeen()) > deadAfter && !c.Replaying() {
		h.cfg.Stats.DeadPeer()
		c.Conn.Abort()
		return
	}
	c.Conn.Ping(b)
}
