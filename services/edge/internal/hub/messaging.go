package hub

// The hub's seam to NATS: what it asks of the connection, and nothing the
// router calls per message (every message comes through the inbox channel).

import (
	"context"

	"github.com/nats-io/nats.go"
)

// Messaging is what the hub needs from NATS: subscriptions delivering into
// its inbox, and a way to know that the server has confirmed them. A
// *nats.Conn is one; tests give a fake to run the registry and the router
// without a server.
type Messaging interface {
	ChanSubscribe(subject string, ch chan *nats.Msg) (*nats.Subscription, error)
	IsConnected() bool
	FlushWithContext(ctx context.Context) error
}

var _ Messaging = (*nats.Conn)(nil)
