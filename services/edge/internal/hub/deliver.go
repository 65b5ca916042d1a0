package hub

// Delivery: one outbound message encoded once per edge and queued for each
// connection it targets.

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// maxKeptPayload is the largest encoding buffer deliver keeps for the next message.
const maxKeptPayload = 64 << 10

var serverClose = wsconn.TextFrame(wire.AppendServerFrame(nil, wire.ActionClose, nil, nil))

// deliver queues m for the connections it targets, taking the writing of
// those nobody was writing into b, and returns how many connections it
// targeted.
func (h *Hub) deliver(m *nats.Msg, at time.Time, b *wsconn.Batch) int {
	rest, ok := strings.CutPrefix(m.Subject, h.cfg.Subjects.Prefix+".")
	if !ok {
		return 0
	}
	if ctl, ok := strings.CutPrefix(rest, "ctl.close."); ok {
		h.kick(ctl)
		return 0
	}
	target, ok := strings.CutPrefix(rest, "send.")
	var seq uint64
	if !ok {
		if target, seq, ok = h.republished(rest, m); !ok {
			return 0
		}
	}
	ctx := context.Background()
	var span trace.Span
	if m.Header != nil && m.Header.Get(wire.HeaderTraceparent) != "" {
		// The publisher traced this message: the delivery joins its trace.
		ctx = propagation.TraceContext{}.Extract(ctx, telemetry.NATSHeader(m.Header))
		ctx, span = h.cfg.Tracer.Start(ctx, "ws deliver", trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attribute.String("messaging.destination.name", m.Subject)))
		defer span.End()
	}
	out, err := wire.DecodeOutbound(m.Data)
	if err != nil {
		h.cfg.Stats.BadOutbound()
		h.cfg.Logger.DebugContext(ctx, "outbound message refused", "subject", m.Subject, "err", err)
		return 0
	}
	if seq != 0 {
		h.payload = wire.AppendServerFrameSeq(h.payload[:0], out.Action, out.Details, out.Ref, seq)
	} else {
		h.payload = wire.AppendServerFrame(h.payload[:0], out.Action, out.Details, out.Ref)
	}
	d := delivery{out: wsconn.NewOutbound(h.payload), at: at, s: h.cfg.Stats, batch: b, seq: seq}
	defer d.counted()
	if cap(h.payload) > maxKeptPayload {
		h.payload = nil // a rare large message does not keep its buffer
	}
	if span != nil {
		span.SetName("ws deliver " + out.Action)
		defer func() { span.SetAttributes(attribute.Int("wsgate.recipients", d.sent)) }()
	}

	h.mu.RLock()
	defer h.mu.RUnlock()
	kind, key, _ := strings.Cut(target, ".")
	switch kind {
	case "all":
		d.out.MayReach(len(h.clients))
		for _, c := range h.clients {
			if c.Identity() != nil {
				d.to(c)
			}
		}
	case "users":
		d.out.MayReach(len(h.clients))
		for _, c := range h.clients {
			if id := c.Identity(); id != nil && id.User != "" {
				d.to(c)
			}
		}
	case "filter":
		if out.Filter == nil {
			h.cfg.Stats.BadOutbound()
			return 0
		}
		d.out.MayReach(len(h.clients))
		for _, c := range h.clients {
			if id := c.Identity(); id != nil {
				if v, ok := c.property(id, out.Filter.Property); ok && v == out.Filter.Value {
					d.to(c)
				}
			}
		}
	case "user":
		d.toTopic(h.users[key])
	case "group":
		d.toTopic(h.groups[key])
	case "session":
		d.toTopic(h.sessions[key])
	case "conn":
		_, id, _ := strings.Cut(key, ".")
		if c := h.clients[id]; c != nil && c.Identity() != nil {
			d.to(c)
		}
	}
	return d.sent
}

// delivery queues one message, each of its frames built once, for many clients.
type delivery struct {
	out   wsconn.Outbound
	at    time.Time // arrival from NATS
	sent  int
	s     *stats.Stats
	batch *wsconn.Batch // the writing of the clients taken over
	seq   uint64        // history sequence of a stored message; 0 for others
}

func (d *delivery) toTopic(t *topic) {
	if t == nil {
		return
	}
	d.out.MayReach(len(t.clients))
	for c := range t.clients {
		d.to(c)
	}
}

func (d *delivery) to(c *Client) {
	p := c.pos.Load()
	if p == nil {
		d.queue(c) // not started through a recovery: nothing to hold or compare
		return
	}
	d.admit(c, p)
}

func (d *delivery) queue(c *Client) {
	err := c.Conn.Queue(d.batch, d.out.FrameFor(c.Conn), d.at)
	d.sent++
	switch {
	case err == nil:
		d.s.Delivered.Add(1)
	case errors.Is(err, wsconn.ErrQueueFull):
		d.s.SlowConsumer()
	default:
		d.s.Dropped.Add(1)
	}
}
