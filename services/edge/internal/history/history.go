// Package history runs the edge's side of DESIGN.md §8: it creates or
// updates the JetStream stream that stores every ws.send.* target message
// and republishes it with its sequence to ws.out.*, keeps track of the
// stream's incarnation (its epoch), and replays what a reconnecting
// connection missed.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"

	"github.com/wsgate/wsgate/api/wire"
)

// Storage kinds of WS_HISTORY besides "off".
const (
	StorageMemory = "memory"
	StorageFile   = "file"
)

// checkInterval is how often the stream's state (and epoch) is read, and
// how soon a stream deleted or not reachable at start is (re)created.
const checkInterval = 2 * time.Second

// apiTimeout bounds one JetStream API request of the watcher.
const apiTimeout = 5 * time.Second

// Config is what the history needs to know.
type Config struct {
	Storage       string // StorageMemory or StorageFile
	Stream        string // stream name
	Subjects      wire.Subjects
	MaxAge        time.Duration
	MaxPerSubject int64
	MaxBytes      int64 // -1: no byte cap
	Replicas      int
	// Replays is how many replays run at once on this edge; the others
	// wait for a slot, at most ReplayWait (0: ReplayTimeout). A replay
	// then runs at most ReplayTimeout.
	Replays       int
	ReplayWait    time.Duration
	ReplayTimeout time.Duration
	// Window is how many bytes of the stream's recent messages an edge
	// keeps during a reconnect storm, read once and shared by its replays
	// (0: none; see window).
	Window int64
	Logger *slog.Logger
	Meter  metric.Meter // nil: no metrics
}

// ErrNotReady is returned by Ready before the stream was first seen.
var ErrNotReady = errors.New("history: stream not ready yet")

// History is the edge's handle on the history stream.
type History struct {
	cfg   Config              // static
	nc    *nats.Conn          // static
	js    jetstream.JetStream // static
	slots chan struct{}       // static: one token per running replay
	m     *metrics            // static

	epoch atomic.Pointer[string]     // the stream's current epoch ("" until known)
	pos   atomic.Pointer[wire.Since] // the stream's epoch and last sequence as last read
	state atomic.Pointer[error]      // nil when the stream is reachable, else why not

	reads  latestRead[jetstream.Stream] // stream info requests shared by replays
	shared sharedSubjects               // static map: what replays read of all, users and filter
	win    window                       // the recent range read once for a storm's replays
	busy   atomic.Int64                 // replays running or waiting for a slot
	atOnce int64                        // static: replays at once from which the window is used

	mu      sync.Mutex
	onEpoch func(epoch string) // owned by mu; told when the epoch changes

	beforeRead func() // tests only (export_test.go): runs as a replay starts reading
}

// New returns the history of nc's JetStream; call Run to create the stream.
func New(nc *nats.Conn, cfg Config) (*History, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Replays <= 0 {
		cfg.Replays = 1
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	h := &History{cfg: cfg, nc: nc, js: js, slots: make(chan struct{}, cfg.Replays), m: newMetrics(cfg.Meter),
		shared: newSharedSubjects(cfg.Subjects.SendAll(), cfg.Subjects.SendUsers(), cfg.Subjects.SendFilter()),
		win:    window{max: cfg.Window}, atOnce: windowAtOnce}
	empty := ""
	h.epoch.Store(&empty)
	h.pos.Store(&wire.Since{})
	h.state.Store(&ErrNotReady)
	return h, nil
}

// OnEpoch makes f be called (from Run's goroutine) each time the stream is
// found recreated: every live connection's position then belongs to an
// incarnation that is gone.
func (h *History) OnEpoch(f func(epoch string)) {
	h.mu.Lock()
	h.onEpoch = f
	h.mu.Unlock()
}

// Ready reports why the history cannot serve now, or nil.
func (h *History) Ready() error { return *h.state.Load() }

// Epoch is the stream's incarnation as last seen ("" before it was seen).
func (h *History) Epoch() string { return *h.epoch.Load() }

// Position is the stream's epoch and last sequence as last read (every
// checkInterval): read before a connection subscribes, it is at or before
// the first stored message the connection can get live, a start from
// which a later recovery misses nothing.
func (h *History) Position() wire.Since { return *h.pos.Load() }

// StreamConfig is the configuration every edge creates or updates.
func (h *History) StreamConfig() jetstream.StreamConfig {
	storage := jetstream.MemoryStorage
	if h.cfg.Storage == StorageFile {
		storage = jetstream.FileStorage
	}
	s := h.cfg.Subjects
	return jetstream.StreamConfig{
		Name:              h.cfg.Stream,
		Description:       "wsgate history: every ws.send target message, republished with its sequence (DESIGN.md §8)",
		Subjects:          s.HistorySubjects(),
		Storage:           storage,
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            h.cfg.MaxAge,
		MaxMsgsPerSubject: h.cfg.MaxPerSubject,
		MaxBytes:          h.cfg.MaxBytes,
		Replicas:          max(1, h.cfg.Replicas),
		AllowDirect:       true,
		RePublish:         &jetstream.RePublish{Source: s.SendAny(), Destination: s.OutAny()},
	}
}

// Ensure creates the stream, or updates it to this edge's configuration.
// Edges starting together may race: the loser of a create finds the
// stream and updates it instead.
func (h *History) Ensure(ctx context.Context) error {
	cfg := h.StreamConfig()
	st, err := h.js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = h.js.UpdateStream(ctx, cfg)
	}
	if err != nil {
		err = fmt.Errorf("history: create or update stream %s: %w", cfg.Name, err)
		h.fail(err)
		return err
	}
	h.observe(st.CachedInfo())
	return nil
}

// Run keeps the stream and its epoch known until ctx is done: it creates
// the stream when it is missing (first start, or deleted), and reports the
// stream's reachability through Ready.
func (h *History) Run(ctx context.Context) {
	t := time.NewTicker(checkInterval)
	defer t.Stop()
	for {
		h.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *History) check(ctx context.Context) {
	h.win.expire(time.Now().Add(-windowIdle))
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	st, err := h.js.Stream(ctx, h.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = h.Ensure(ctx)
	} else if err == nil {
		h.observe(st.CachedInfo())
	}
	if err != nil && ctx.Err() == nil {
		h.fail(fmt.Errorf("history: stream %s: %w", h.cfg.Stream, err))
	}
}

// observe records a stream info read: the stream is reachable, and its
// epoch is the one of info.
func (h *History) observe(info *jetstream.StreamInfo) {
	if was := h.state.Swap(new(error)); *was != nil && !errors.Is(*was, ErrNotReady) {
		h.cfg.Logger.Info("history stream available", "stream", h.cfg.Stream)
	}
	epoch := EpochOf(info)
	h.pos.Store(&wire.Since{Epoch: epoch, Seq: info.State.LastSeq})
	old := h.epoch.Swap(&epoch)
	if *old != "" && *old != epoch {
		h.cfg.Logger.Warn("history stream was recreated: live positions restart", "stream", h.cfg.Stream, "epoch", epoch, "was", *old)
		h.mu.Lock()
		f := h.onEpoch
		h.mu.Unlock()
		if f != nil {
			f(epoch)
		}
	}
}

func (h *History) fail(err error) {
	if was := h.state.Swap(&err); *was == nil || errors.Is(*was, ErrNotReady) {
		h.cfg.Logger.Error("history stream unavailable", "stream", h.cfg.Stream, "err", err)
	}
}

// EpochOf is the incarnation of a stream: its creation time, which a
// deleted and recreated stream does not share.
func EpochOf(info *jetstream.StreamInfo) string {
	return strconv.FormatInt(info.Created.UnixNano(), 36)
}
