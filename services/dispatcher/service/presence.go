package service

import (
	"context"
	"log/slog"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"

	"github.com/wsgate/wsgate/services/dispatcher/internal/presence"
	"github.com/wsgate/wsgate/services/internal/presencekv"
)

// startPresence answers the presence requests, and with WS_PRESENCE on
// watches the presence bucket to reap dead edges' connections and fire
// Client/offline (DESIGN.md §9).
func startPresence(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, meter metric.Meter) (*presence.Service, error) {
	mode, bucket := cfg.Presence, cfg.PresenceBucket
	if mode == "" {
		mode = presencekv.Off
	}
	if bucket == "" {
		bucket = presencekv.DefaultBucket
	}
	return presence.Start(ctx, nc, presence.Config{
		Prefix: cfg.Prefix, Queue: cfg.Queue, Mode: mode, Bucket: bucket, Grace: cfg.PresenceGrace,
		Logger: log, Meter: meter, Inbound: cfg.InboundOn(),
	})
}
