// Package stats holds the edge's metrics, recorded through the OTel metric
// API. Hot-path counts (frames, bytes, deliveries) are plain atomics read by
// observable instruments at scrape time, so a delivery costs an atomic add;
// the writers' counts and the delivery latency histogram are sharded by
// connection (Shard) and the histogram is handed to the exporter at scrape
// time (Produce); rare events use synchronous counters with attributes.
package stats

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Stats is every metric of one edge. The zero value is not usable; use New.
type Stats struct {
	FramesIn, BytesIn atomic.Uint64 // frames read from clients
	Delivered         atomic.Uint64 // outbound frames queued to connections
	Dropped           atomic.Uint64 // outbound frames for connections already closing
	Subscriptions     atomic.Int64  // user/group/session subscriptions held
	Deflated          atomic.Uint64 // outbound messages compressed (once per message and edge)

	shards    [shards]Shard // frames and bytes written, delivery latency; by connection
	nextShard atomic.Uint32
	start     time.Time // the histogram's start

	closes         metric.Int64Counter
	authFailures   metric.Int64Counter
	refused        metric.Int64Counter
	publishErrors  metric.Int64Counter
	slowConsumers  metric.Int64Counter
	badFrames      metric.Int64Counter
	rateLimited    metric.Int64Counter
	kicks          metric.Int64Counter
	deadPeers      metric.Int64Counter
	badOutbound    metric.Int64Counter
	natsReconnects metric.Int64Counter
	opened         metric.Int64Counter
	compressed     metric.Int64Counter

	closeAttrs sync.Map // close code → metric.AddOption, built once per code
}

// Connections counts the connections by state, at scrape time.
type Connections func() (pending, anonymous, authenticated int64)

var (
	dirIn  = metric.WithAttributes(attribute.String("direction", "in"))
	dirOut = metric.WithAttributes(attribute.String("direction", "out"))
)

// New registers the edge's instruments on meter (nil: a no-op meter, for
// tests of parts that do not look at metrics). conns is read at scrape time.
func New(meter metric.Meter, conns Connections) *Stats {
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	m := telemetry.Must[metric.Int64Counter]
	s := &Stats{
		start:          time.Now(),
		closes:         m(meter.Int64Counter("wsgate.edge.closes", metric.WithDescription("Connections closed, by close code."))),
		authFailures:   m(meter.Int64Counter("wsgate.edge.auth.failures", metric.WithDescription("Failed authentications, by reason."))),
		refused:        m(meter.Int64Counter("wsgate.edge.connections.refused", metric.WithDescription("Upgrade requests refused, by reason."))),
		publishErrors:  m(meter.Int64Counter("wsgate.edge.nats.publish.errors", metric.WithDescription("Inbound envelopes that could not be published to NATS."))),
		slowConsumers:  m(meter.Int64Counter("wsgate.edge.slow_consumer.closes", metric.WithDescription("Connections closed with 4500 because their send queue was full."))),
		badFrames:      m(meter.Int64Counter("wsgate.edge.frames.invalid", metric.WithDescription("Client frames refused as malformed."))),
		rateLimited:    m(meter.Int64Counter("wsgate.edge.frames.rate_limited", metric.WithDescription("Client frames dropped by the per-connection rate limit."))),
		kicks:          m(meter.Int64Counter("wsgate.edge.kicks", metric.WithDescription("Connections closed by a ctl.close message."))),
		deadPeers:      m(meter.Int64Counter("wsgate.edge.dead_peers", metric.WithDescription("Connections dropped because the peer stopped answering pings."))),
		badOutbound:    m(meter.Int64Counter("wsgate.edge.outbound.invalid", metric.WithDescription("Outbound NATS messages refused as invalid."))),
		natsReconnects: m(meter.Int64Counter("wsgate.edge.nats.reconnects", metric.WithDescription("Reconnections to NATS."))),
		opened:         m(meter.Int64Counter("wsgate.edge.connections.opened", metric.WithDescription("WebSocket upgrades accepted."))),
		compressed: m(meter.Int64Counter("wsgate.edge.connections.compressed",
			metric.WithDescription("WebSocket upgrades that negotiated permessage-deflate."))),
	}
	// Counters without attributes exist from the start, at 0, so that
	// dashboards and alerts see them before the first event.
	for _, c := range []metric.Int64Counter{s.publishErrors, s.slowConsumers, s.badFrames, s.rateLimited,
		s.kicks, s.deadPeers, s.badOutbound, s.natsReconnects, s.opened, s.compressed} {
		c.Add(ctx, 0)
	}
	frames := telemetry.Must(meter.Int64ObservableCounter("wsgate.edge.frames", metric.WithDescription("Frames between clients and this edge, by direction.")))
	bytes := telemetry.Must(meter.Int64ObservableCounter("wsgate.edge.bytes", metric.WithUnit("By"), metric.WithDescription("Payload bytes between clients and this edge, by direction.")))
	delivered := telemetry.Must(meter.Int64ObservableCounter("wsgate.edge.deliveries", metric.WithDescription("Outbound frames queued to connections.")))
	dropped := telemetry.Must(meter.Int64ObservableCounter("wsgate.edge.deliveries.dropped", metric.WithDescription("Outbound frames for connections already closing.")))
	connections := telemetry.Must(meter.Int64ObservableGauge("wsgate.edge.connections", metric.WithDescription("Open WebSocket connections, by state.")))
	deflated := telemetry.Must(meter.Int64ObservableCounter("wsgate.edge.deliveries.compressed",
		metric.WithDescription("Outbound messages compressed for permessage-deflate connections (once per message, whatever the recipients).")))
	subs := telemetry.Must(meter.Int64ObservableGauge("wsgate.edge.subscriptions", metric.WithDescription("User, group and session NATS subscriptions held.")))
	_ = telemetry.Must(meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		framesOut, bytesOut := s.written()
		o.ObserveInt64(frames, int64(s.FramesIn.Load()), dirIn)
		o.ObserveInt64(frames, int64(framesOut), dirOut)
		o.ObserveInt64(bytes, int64(s.BytesIn.Load()), dirIn)
		o.ObserveInt64(bytes, int64(bytesOut), dirOut)
		o.ObserveInt64(delivered, int64(s.Delivered.Load()))
		o.ObserveInt64(dropped, int64(s.Dropped.Load()))
		o.ObserveInt64(subs, s.Subscriptions.Load())
		o.ObserveInt64(deflated, int64(s.Deflated.Load()))
		if conns != nil {
			p, a, u := conns()
			o.ObserveInt64(connections, p, metric.WithAttributes(attribute.String("state", "pending")))
			o.ObserveInt64(connections, a, metric.WithAttributes(attribute.String("state", "anonymous")))
			o.ObserveInt64(connections, u, metric.WithAttributes(attribute.String("state", "authenticated")))
		}
		return nil
	}, frames, bytes, delivered, dropped, connections, subs, deflated))
	return s
}

var ctx = context.Background()

// Read counts one frame read from a client.
func (s *Stats) Read(bytes int) {
	s.FramesIn.Add(1)
	s.BytesIn.Add(uint64(bytes))
}

// labelledCloses are the close codes that get their own value of the closes
// counter's code label: those DESIGN §2 defines, and 1005, which RFC 6455
// reserves for a close frame without a code (what a browser's close() sends).
// A peer may send any code of 3000–4999; were each its own label, one client
// could create thousands of time series on every edge.
var labelledCloses = map[int]bool{
	1000: true, 1001: true, 1002: true, 1003: true, 1005: true, 1006: true, 1007: true,
	1008: true, 1009: true, 1011: true, 1012: true, 1013: true,
	4001: true, 4401: true, 4403: true, 4408: true, 4429: true, 4500: true,
}

// otherClose is the code label of every close code not in labelledCloses.
const otherClose = "other"

// Closed counts a connection closed with code.
func (s *Stats) Closed(code int) {
	if !labelledCloses[code] {
		code = 0 // the key of otherClose in closeAttrs
	}
	opt, ok := s.closeAttrs.Load(code)
	if !ok {
		label := otherClose
		if code != 0 {
			label = strconv.Itoa(code)
		}
		opt, _ = s.closeAttrs.LoadOrStore(code, metric.WithAttributes(attribute.String("code", label)))
	}
	s.closes.Add(ctx, 1, opt.(metric.AddOption))
}

// AuthFailed counts a failed authentication; reason is one of a small fixed
// set (auth.Error.Kind), never free text.
func (s *Stats) AuthFailed(reason string) {
	s.authFailures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// Refused counts an upgrade request refused for reason (full, origin, handshake, draining, unavailable).
func (s *Stats) Refused(reason string) {
	s.refused.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// PublishFailed counts an envelope NATS did not take.
func (s *Stats) PublishFailed() { s.publishErrors.Add(ctx, 1) }

// SlowConsumer counts a connection closed with 4500.
func (s *Stats) SlowConsumer() { s.slowConsumers.Add(ctx, 1) }

// BadFrame counts a malformed client frame.
func (s *Stats) BadFrame() { s.badFrames.Add(ctx, 1) }

// RateLimited counts a frame dropped by the rate limit.
func (s *Stats) RateLimited() { s.rateLimited.Add(ctx, 1) }

// Kicked counts a connection closed by ctl.close.
func (s *Stats) Kicked() { s.kicks.Add(ctx, 1) }

// DeadPeer counts a connection dropped for silence.
func (s *Stats) DeadPeer() { s.deadPeers.Add(ctx, 1) }

// BadOutbound counts an outbound message refused as invalid.
func (s *Stats) BadOutbound() { s.badOutbound.Add(ctx, 1) }

// Opened counts one accepted WebSocket upgrade.
func (s *Stats) Opened() { s.opened.Add(ctx, 1) }

// NATSReconnected counts a reconnection to NATS.
func (s *Stats) NATSReconnected() { s.natsReconnects.Add(ctx, 1) }

// CompressedConnection counts an upgrade that negotiated permessage-deflate.
func (s *Stats) CompressedConnection() { s.compressed.Add(ctx, 1) }
