package gateway

import (
	"encoding/json"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/inbound"
)

// maxUnacked bounds the reliable frames of one connection that wait for the
// inbound stream's acknowledgement. The reader never waits for the stream
// (see inbound.Publisher); beyond this bound a frame is answered
// Server/ack:error 503 at once and the client resends it later, so a
// stalled stream costs each connection at most this many pending entries.
const maxUnacked = 64

// Keys of lifecycle events in their Nats-Msg-Id, "<connection>.<key>": one
// event of each kind per connection, so the stream stores each once.
const (
	eventAuthentication = "auth"
	eventDisconnection  = "disc"
)

// Messages of Server/ack:error.
const (
	msgAckUnavailable = "not stored: the inbound stream is unavailable, send again later"
	msgAckTooMany     = "not stored: too many actions wait for storage, send again later"
	msgAckCore        = "not delivered: messaging is unavailable"
)

// publishReliable handles a frame that carries a message id (DESIGN.md §8):
// with the inbound stream on, it is stored on <prefix>.inq.<action> and
// acknowledged once stored; without, it goes to <prefix>.in.<action> as any
// frame and the ack says durable: false.
func (s *session) publishReliable(f wire.ClientFrame) {
	inb := s.g.cfg.Inbound
	if inb == nil {
		if err := s.publish(f.Action, f.Details, f.Ref); err != nil {
			s.send(wire.AckErrorFrame(f.ID, wire.CodeUnavailable, msgAckCore))
			return
		}
		s.send(wire.AppendAck(nil, f.ID, wire.Ack{}))
		return
	}
	if s.unacked.Add(1) > maxUnacked {
		s.unacked.Add(-1)
		s.send(wire.AckErrorFrame(f.ID, wire.CodeUnavailable, msgAckTooMany))
		return
	}
	id, key := f.ID, s.dedupeKey(f.ID)
	err := s.publishVia(f.Action, f.Details, f.Ref, func(msg *nats.Msg) error {
		msg.Subject = s.g.cfg.Subjects.Inq(f.Action)
		msg.Header.Set(wire.HeaderMsgID, key)
		return inb.Publish(msg, func(r inbound.Result) {
			// On the publisher's goroutine: queue the answer, never wait.
			s.unacked.Add(-1)
			if r.Err != nil {
				s.g.cfg.Logger.Debug("reliable inbound not stored", "conn", s.c.Connection, "action", f.Action, "err", r.Err)
				s.send(wire.AckErrorFrame(id, wire.CodeUnavailable, msgAckUnavailable))
				return
			}
			s.send(wire.AppendAck(nil, id, wire.Ack{Duplicate: r.Duplicate, Durable: true}))
		})
	})
	if err != nil {
		s.unacked.Add(-1)
		s.send(wire.AckErrorFrame(id, wire.CodeUnavailable, msgAckUnavailable))
	}
}

// dedupeKey is the Nats-Msg-Id of a reliable frame: "<user>.<id>", so that a
// resend from another connection of the user (after a reconnect, on another
// edge) is recognised; an anonymous connection has only itself,
// "<edge>.<conn>.<id>".
func (s *session) dedupeKey(id string) string {
	if user := s.c.Identity().User; user != "" {
		return user + "." + id
	}
	return s.c.Connection + "." + id
}

// publishEvent publishes a lifecycle event: through the inbound stream,
// once per connection and key, when it is on; else on core NATS.
func (s *session) publishEvent(action string, details json.RawMessage, key string) {
	inb := s.g.cfg.Inbound
	if inb == nil {
		_ = s.publish(action, details, nil) // publish logs and counts its failure
		return
	}
	conn := s.c.Connection
	_ = s.publishVia(action, details, nil, func(msg *nats.Msg) error {
		return inb.PublishEvent(msg, s.g.cfg.Subjects.Inq(action), conn+"."+key, func(err error) {
			s.g.cfg.Stats.PublishFailed()
			s.g.cfg.Logger.Warn("lifecycle event not published", "conn", conn, "action", action, "err", err)
		})
	})
}
