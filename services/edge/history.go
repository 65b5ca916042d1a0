package edge

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// newHistory returns the edge's history, or nil when WS_HISTORY is off.
func newHistory(cfg Config, nc *nats.Conn, subjects wire.Subjects, log *slog.Logger, tel *telemetry.Telemetry) (*history.History, error) {
	if !cfg.History.On() {
		return nil, nil
	}
	h := cfg.History
	return history.New(nc, history.Config{
		Storage: h.Storage, Stream: h.Stream, Subjects: subjects,
		MaxAge: h.MaxAge, MaxPerSubject: h.MaxPerSubject, MaxBytes: h.MaxBytes, Replicas: h.Replicas,
		Replays: h.Replays, ReplayWait: h.ReplayWait, ReplayTimeout: h.ReplayTimeout, Window: h.Window, Logger: log, Meter: tel.Meter,
	})
}

// startHistory creates or updates the history stream before the edge
// subscribes (a failure is logged and retried: live connections do not
// wait for it, and /readyz reports it), then keeps watching the stream.
func (s *Server) startHistory(ctx context.Context, wg *sync.WaitGroup) {
	s.history.OnEpoch(s.hub.ResetPositions)
	ectx, cancel := context.WithTimeout(ctx, shutdownMargin)
	defer cancel()
	_ = s.history.Ensure(ectx) // a failure is logged, and retried by Run
	wg.Add(1)
	go func() { defer wg.Done(); s.history.Run(ctx) }()
}
