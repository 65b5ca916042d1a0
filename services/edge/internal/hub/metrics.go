package hub

import (
	"sync/atomic"

	"github.com/wsgate/wsgate/services/internal/metrics"
)

// Metrics are the hub's counters and gauges.
type Metrics struct {
	Connections   atomic.Int64 // registered connections, authenticated or not
	Subscriptions atomic.Int64 // user/group/session subscriptions held
	Delivered     *atomic.Uint64
	Dropped       *atomic.Uint64 // frames for connections already closing
	SlowConsumers *atomic.Uint64 // connections closed with 4500
	BadOutbound   *atomic.Uint64 // outbound messages that failed validation
	Kicked        *atomic.Uint64 // connections closed by ctl.close.*
	DeadPeers     *atomic.Uint64 // connections dropped for silence
}

// NewMetrics registers the hub's metrics in reg (nil: a private registry).
func NewMetrics(reg *metrics.Registry) *Metrics {
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	m := &Metrics{
		Delivered:     reg.Counter("wsgate_edge_frames_delivered_total", "Outbound frames queued to connections.").With(),
		Dropped:       reg.Counter("wsgate_edge_frames_dropped_total", "Outbound frames dropped because their connection was closing.").With(),
		SlowConsumers: reg.Counter("wsgate_edge_slow_consumer_closes_total", "Connections closed with 4500 because their send queue was full.").With(),
		BadOutbound:   reg.Counter("wsgate_edge_outbound_invalid_total", "Outbound NATS messages refused as invalid.").With(),
		Kicked:        reg.Counter("wsgate_edge_kicks_total", "Connections closed by a ctl.close message.").With(),
		DeadPeers:     reg.Counter("wsgate_edge_dead_peers_total", "Connections dropped because the peer stopped answering pings.").With(),
	}
	reg.GaugeFunc("wsgate_edge_connections", "Open WebSocket connections.", func() float64 { return float64(m.Connections.Load()) })
	reg.GaugeFunc("wsgate_edge_subscriptions", "User, group and session NATS subscriptions held.", func() float64 { return float64(m.Subscriptions.Load()) })
	return m
}
