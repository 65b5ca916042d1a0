// Package inbound is the edge's side of reliable inbound (DESIGN.md §8):
// the work-queue stream that stores client frames carrying a message id,
// and the asynchronous publisher that tells each connection when the
// stream has stored its frame.
package inbound

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
)

// Storage modes of WS_INBOUND.
const (
	ModeOff    = "off"
	ModeMemory = "memory"
	ModeFile   = "file"
)

// StreamConfig is the inbound stream as the edges create it.
type StreamConfig struct {
	Mode     string        // ModeMemory or ModeFile
	Name     string        // WS_INBOUND_STREAM
	Dedupe   time.Duration // WS_INBOUND_DEDUPE: how long a message id is remembered
	Replicas int           // WS_INBOUND_REPLICAS
	MaxAge   time.Duration // WS_INBOUND_MAX_AGE; 0: no limit
	Subjects wire.Subjects
}

// ErrMode is returned for a WS_INBOUND value that is not a storage mode.
var ErrMode = errors.New("inbound: mode must be off, memory or file")

// EnsureStream creates the inbound stream, or updates it to cfg: a
// work-queue stream on <prefix>.inq.>, so that each stored frame is
// delivered to one dispatcher consumer and removed once acknowledged.
// Every edge calls it at start; the calls converge on the same config.
func EnsureStream(ctx context.Context, nc *nats.Conn, cfg StreamConfig) (jetstream.StreamInfo, error) {
	var storage jetstream.StorageType
	switch cfg.Mode {
	case ModeMemory:
		storage = jetstream.MemoryStorage
	case ModeFile:
		storage = jetstream.FileStorage
	default:
		return jetstream.StreamInfo{}, fmt.Errorf("%w, got %q", ErrMode, cfg.Mode)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return jetstream.StreamInfo{}, fmt.Errorf("inbound: jetstream: %w", err)
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "wsgate reliable inbound: client actions with a message id, until a dispatcher acknowledges them",
		Subjects:    []string{cfg.Subjects.InqAll()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     storage,
		Replicas:    max(cfg.Replicas, 1),
		Duplicates:  cfg.Dedupe,
		Discard:     jetstream.DiscardOld,
		// A work queue keeps what no consumer takes: lifecycle events when
		// no dispatcher handles them, actions nobody handles. MaxAge bounds it.
		MaxAge: cfg.MaxAge,
	})
	if err != nil {
		return jetstream.StreamInfo{}, fmt.Errorf("inbound: create or update stream %s: %w", cfg.Name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return jetstream.StreamInfo{}, fmt.Errorf("inbound: stream %s: %w", cfg.Name, err)
	}
	return *info, nil
}
