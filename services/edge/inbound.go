package edge

import (
	"context"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/inbound"
)

// Timing of the inbound stream's creation at start.
const (
	inboundSetupTimeout = 5 * time.Second
	inboundSetupRetry   = 2 * time.Second
)

// ensureInbound creates or updates the inbound stream (WS_INBOUND), retrying
// until it succeeds or ctx is done: an edge starts without NATS, and until
// the stream exists reliable frames are answered Server/ack:error 503.
func (s *Server) ensureInbound(ctx context.Context) {
	cfg := inbound.StreamConfig{
		Mode: s.cfg.Inbound, Name: s.cfg.InboundStream, Dedupe: s.cfg.InboundDedupe,
		Replicas: s.cfg.InboundReplicas, MaxAge: s.cfg.InboundMaxAge, Subjects: wire.NewSubjects(s.cfg.Prefix),
	}
	for {
		sctx, cancel := context.WithTimeout(ctx, inboundSetupTimeout)
		info, err := inbound.EnsureStream(sctx, s.nc, cfg)
		cancel()
		if err == nil {
			s.log.Info("inbound stream ready", "stream", info.Config.Name, "storage", s.cfg.Inbound,
				"replicas", info.Config.Replicas, "dedupe", info.Config.Duplicates.String(), "messages", info.State.Msgs)
			return
		}
		s.log.Warn("inbound stream not ready; retrying", "stream", s.cfg.InboundStream, "err", err, "retry_in", inboundSetupRetry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(inboundSetupRetry):
		}
	}
}
