package gateway

// The gateway's seams: what it needs from the hub and from NATS, as small
// interfaces, so that admission, renewal and refusal can be tested without
// a NATS server or a hub. Every call through them is per connection or per
// client frame, never per outbound message.

import (
	"context"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/netpoll"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// Registry is what the gateway needs from the hub: to register a
// connection, give it an identity (confirmed by the NATS server), hear that
// its close frame went out, hold its live stored messages during a
// recovery or a NATS outage, and forget it.
type Registry interface {
	Add(c *hub.Client)
	Authenticate(ctx context.Context, c *hub.Client, id *auth.Identity) error
	CloseSent(c *hub.Client)
	BeginRecovery(c *hub.Client)
	BeginCatchUp(c *hub.Client) uint64
	EndRecovery(c *hub.Client, epoch string, last uint64) (live, again bool)
	HoldLive() []*hub.Client
	NATSBack()
	Outage() (count uint64, down bool)
	Registered(c *hub.Client) bool
	Remove(c *hub.Client)
}

// Publisher is what the gateway needs from NATS: to publish a client's
// envelopes and lifecycle events, and to know whether it can.
type Publisher interface {
	PublishMsg(m *nats.Msg) error
	IsConnected() bool
}

var (
	_ Registry        = (*hub.Hub)(nil)
	_ Publisher       = (*nats.Conn)(nil)
	_ netpoll.Handler = (*session)(nil)
	_ wsconn.Stats    = (*stats.Shard)(nil)
)
