package hub

// The router: one goroutine takes every message from the inbox, in order,
// and batches the writing; large fan-outs are shared with the flush workers.

import (
	"context"
	"time"

	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// route delivers every message of the inbox. One goroutine does it, so that
// messages from one publisher reach each connection in publish order.
func (h *Hub) route(ctx context.Context) {
	var pending []*wsconn.Conn // connections whose writing this goroutine took over
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-h.inbox:
			pending, _ = h.deliver(m, time.Now(), pending[:0])
			pending = h.deliverWaiting(pending)
			h.flush(pending)
			clear(pending)
			h.routed.Add(1)
		}
	}
}

// maxBatch bounds the messages routed before their frames are written.
const maxBatch = 64

// spreadBatch: once this many connections wait to be written, a waiting
// message that shares none of them ends the batch (see deliverWaiting).
const spreadBatch = 8

// deliverWaiting queues the messages that arrived while the last one was
// routed (at most maxBatch-1), before anything is written: a connection
// that several of them target then gets them in one write. Batching pays
// only while the messages share their recipients (a broadcast's backlog);
// messages to different connections (unicasts, replies) gain nothing from
// waiting for each other, so the batch ends once spreadBatch connections
// wait and a message shares none of its recipients with them. When
// messages come slower than they are routed there are none, and nothing
// waits.
func (h *Hub) deliverWaiting(pending []*wsconn.Conn) []*wsconn.Conn {
	for range maxBatch - 1 {
		select {
		case m := <-h.inbox:
			before := len(pending)
			var targeted int
			pending, targeted = h.deliver(m, time.Now(), pending)
			if added := len(pending) - before; added > 0 && added == targeted && len(pending) >= spreadBatch {
				return pending // m shared no recipient with the batch
			}
		default:
			return pending
		}
	}
	return pending
}

// inlineFlush: fan-outs up to this many connections are written by the
// router itself, unless the router is behind; larger ones are shared with
// the flush workers.
const inlineFlush = 64

// behind: the router is behind when this many messages wait in the inbox.
const behind = maxBatch

// flush writes the queues of conns, none of which blocks: a socket that is
// full gets a writer goroutine of its own. Large sets, and any set while the
// router is behind, are split between this goroutine and the flush workers,
// so that every core writes: when messages to different connections
// (unicasts, replies) come faster than one goroutine writes them, one by
// one, the writing is shared. Below that, sharing would cost a wake-up for
// no gain. Only the router calls it (see Run).
func (h *Hub) flush(conns []*wsconn.Conn) {
	if h.workers > 1 && (len(conns) > inlineFlush || len(conns) > 1 && len(h.inbox) >= behind) {
		share := (len(conns) + h.workers - 1) / h.workers
		for len(conns) > share {
			h.flushes <- append([]*wsconn.Conn(nil), conns[len(conns)-share:]...)
			conns = conns[:len(conns)-share]
		}
	}
	flushAll(conns)
}

// flushLoop is a flush worker. It stops when the router has returned and
// every share is written, so that no connection is left holding a right to
// write nobody uses.
func (h *Hub) flushLoop() {
	for conns := range h.flushes {
		flushAll(conns)
	}
}

func flushAll(conns []*wsconn.Conn) {
	for _, c := range conns {
		c.Flush()
	}
}
