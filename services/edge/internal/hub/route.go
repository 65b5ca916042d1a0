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
	var batch wsconn.Batch // connections whose writing this goroutine took over
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-h.inbox:
			h.deliver(m, time.Now(), &batch)
			h.deliverWaiting(&batch)
			h.flush(&batch)
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
func (h *Hub) deliverWaiting(b *wsconn.Batch) {
	for range maxBatch - 1 {
		select {
		case m := <-h.inbox:
			before := b.Len()
			targeted := h.deliver(m, time.Now(), b)
			if added := b.Len() - before; added > 0 && added == targeted && b.Len() >= spreadBatch {
				return // m shared no recipient with the batch
			}
		default:
			return
		}
	}
}

// inlineFlush: fan-outs up to this many connections are written by the
// router itself, unless the router is behind; larger ones are shared with
// the flush workers.
const inlineFlush = 64

// behind: the router is behind when this many messages wait in the inbox.
const behind = maxBatch

// flush writes the queues of b's connections, none of which blocks: a
// socket that is full gets a writer goroutine of its own. Large sets, and
// any set while the router is behind, are cut into shares for the flush
// workers, so that every core writes: when messages to different
// connections (unicasts, replies) come faster than one goroutine writes
// them, one by one, the writing is shared. Below that, sharing would cost a
// wake-up for no gain. Only the router calls it (see Run).
func (h *Hub) flush(b *wsconn.Batch) {
	if n := b.Len(); h.workers > 1 && (n > inlineFlush || n > 1 && len(h.inbox) >= behind) {
		share := (n + h.workers - 1) / h.workers
		for b.Len() > share {
			h.flushes <- b.Cut(share)
		}
	}
	b.Flush()
}

// flushLoop is a flush worker. It stops when the router has returned and
// every share is written, so that no connection is left holding a right to
// write nobody uses.
func (h *Hub) flushLoop() {
	for share := range h.flushes {
		share.Flush()
	}
}
