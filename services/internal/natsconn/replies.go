package natsconn

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Replies is a subscription to an inbox of its own, for the answers to
// requests that get several (a batch, or one from each edge), read in the
// order they came. nats.Conn.SubscribeSync would do, but its channel is
// sized for 65,536 messages: 512 KiB allocated and cleared for each
// subscription, which in a reconnect storm (one per replay) made a quarter
// of the edge's CPU and drove most of its garbage collection. A Replies
// channel holds size messages: the caller sends its requests one at a
// time and says how many answers one may get. Answers past that are
// dropped (nats.go reports a slow consumer) and Next waits for its context.
type Replies struct {
	Inbox string // the subject to send requests' replies to
	sub   *nats.Subscription
	ch    chan *nats.Msg
}

// SubscribeReplies subscribes to a new inbox on nc for up to size pending
// answers.
func SubscribeReplies(nc *nats.Conn, size int) (*Replies, error) {
	r := &Replies{Inbox: nc.NewRespInbox(), ch: make(chan *nats.Msg, size)}
	sub, err := nc.ChanSubscribe(r.Inbox, r.ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe to replies: %w", err)
	}
	r.sub = sub
	return r, nil
}

// Next is the next answer, or ctx's error when none comes before it ends.
func (r *Replies) Next(ctx context.Context) (*nats.Msg, error) {
	select {
	case m := <-r.ch:
		return m, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close unsubscribes; answers still pending are let go.
func (r *Replies) Close() { _ = r.sub.Unsubscribe() }
