package gateway

import "sync/atomic"

// authBudget bounds the authentications in progress: checking a token or
// asking the callout, then waiting for NATS to confirm the subscriptions.
// Each waits on I/O, and in a reconnect storm (another edge draining its
// clients here) thousands would otherwise wait at once, each holding a
// goroutine and, on the poller's workers, a worker. Past the bound they
// wait in a queue of fixed size; past that they are refused (1013).
type authBudget struct {
	slots   chan struct{} // static; nil: no bound
	queue   int64         // static: how many may wait for a slot
	waiting atomic.Int64  // authentications waiting for a slot
}

func newAuthBudget(concurrency, queue int) *authBudget {
	b := &authBudget{queue: int64(queue)}
	if concurrency > 0 {
		b.slots = make(chan struct{}, concurrency)
	}
	return b
}

// acquire takes a slot, waiting for one when the queue has room; it
// reports false when the queue is full. A true answer must be released.
func (b *authBudget) acquire() bool {
	if b.slots == nil {
		return true
	}
	select {
	case b.slots <- struct{}{}:
		return true
	default:
	}
	if b.waiting.Add(1) > b.queue {
		b.waiting.Add(-1)
		return false
	}
	defer b.waiting.Add(-1)
	b.slots <- struct{}{}
	return true
}

// release gives back a slot taken by acquire.
func (b *authBudget) release() {
	if b.slots != nil {
		<-b.slots
	}
}
