package gateway

import (
	"sync/atomic"

	"github.com/wsgate/wsgate/services/internal/metrics"
)

// Metrics are the gateway's counters.
type Metrics struct {
	Accepted      *atomic.Uint64
	Refused       *metrics.CounterVec // by reason: full, origin, handshake
	Closes        *metrics.CounterVec // by close code
	FramesIn      *atomic.Uint64
	BadFrames     *atomic.Uint64
	RateLimited   *atomic.Uint64
	AuthFailures  *atomic.Uint64
	PublishErrors *atomic.Uint64
	SlowConsumers *atomic.Uint64
}

// NewMetrics registers the gateway's metrics in reg (nil: a private registry).
func NewMetrics(reg *metrics.Registry) *Metrics {
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	return &Metrics{
		Accepted:      reg.Counter("wsgate_edge_connections_accepted_total", "WebSocket connections upgraded.").With(),
		Refused:       reg.Counter("wsgate_edge_connections_refused_total", "Upgrade requests refused, by reason.", "reason"),
		Closes:        reg.Counter("wsgate_edge_closes_total", "Connections closed, by close code.", "code"),
		FramesIn:      reg.Counter("wsgate_edge_frames_in_total", "Frames received from clients.").With(),
		BadFrames:     reg.Counter("wsgate_edge_bad_frames_total", "Frames refused as malformed.").With(),
		RateLimited:   reg.Counter("wsgate_edge_rate_limited_frames_total", "Frames dropped by the per-connection rate limit.").With(),
		AuthFailures:  reg.Counter("wsgate_edge_auth_failures_total", "Failed authentications.").With(),
		PublishErrors: reg.Counter("wsgate_edge_nats_publish_errors_total", "Inbound envelopes that could not be published to NATS.").With(),
		SlowConsumers: reg.Counter("wsgate_edge_reply_slow_consumer_total", "Edge replies that found the send queue full.").With(),
	}
}
