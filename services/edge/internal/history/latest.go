package history

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// latestRead shares a read between replays: a replay needs what the stream
// holds as of a moment after a point of its own (after its connection
// subscribed, after it read its messages), and every replay whose point
// came before a read was sent shares that read. At most one read is in
// flight; replays that arrive meanwhile wait for it to end and share the
// next one. A reconnect storm so asks the server a few times, not once per
// replay.
type latestRead[T any] struct {
	mu   sync.Mutex
	last *oneRead[T] // owned by mu: the latest read, maybe still running
}

// oneRead is one read.
type oneRead[T any] struct {
	sent time.Time     // when the read was sent
	done chan struct{} // closed when v and err are set
	v    T
	err  error
}

// readTimeout bounds a shared read: others wait for it, whatever the
// deadline of the replay that sent it.
const readTimeout = apiTimeout

// get returns the value of a read sent after since, made with read.
func (l *latestRead[T]) get(ctx context.Context, since time.Time, read func(context.Context) (T, error)) (T, error) {
	for {
		l.mu.Lock()
		r := l.last
		switch {
		case r != nil && !r.sent.Before(since) && !(r.ended() && r.err != nil):
			l.mu.Unlock()
			return r.wait(ctx)
		case r != nil && !r.ended():
			l.mu.Unlock()
			_, _ = r.wait(ctx) // too early for us: share the next one
			if ctx.Err() != nil {
				// Even if the read ended well just before: its value is
				// not for us, and there is no time left for the next.
				var zero T
				return zero, fmt.Errorf("shared read: %w", ctx.Err())
			}
			continue
		}
		r = &oneRead[T]{sent: time.Now(), done: make(chan struct{})}
		l.last = r
		l.mu.Unlock()
		rctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		r.v, r.err = read(rctx)
		cancel()
		close(r.done)
		return r.v, r.err
	}
}

func (r *oneRead[T]) ended() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *oneRead[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-r.done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("shared read: %w", ctx.Err())
	}
}
