package gateway

import (
	"context"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// replayPace is how often a replay that filled half the connection's
// queue looks again whether the socket took some.
const replayPace = time.Millisecond

// replayWriteTimeout: a client that does not read its replay within this
// time is closed as a slow consumer.
const replayWriteTimeout = 10 * time.Second

// setSince records the position a connection asked to recover from.
func (s *session) setSince(since wire.Since, err error) {
	if err != nil {
		s.since, s.sinceBad = nil, true
		return
	}
	s.since, s.sinceBad = &since, false
}

// recover runs right after the ok of a first authentication (DESIGN.md
// §8): Server/recovery, the replayed messages, then the live ones held
// meanwhile that come after them. It runs on the connection's reader, so
// nothing the client sends is answered in between. start is the stream's
// position read before the connection subscribed: where it starts from
// when nothing is recovered.
func (s *session) recover(id *auth.Identity, start wire.Since) {
	h := s.g.cfg.History
	ctx := context.Background()
	var res history.Result
	if s.sinceBad {
		res = h.Invalid(ctx)
	} else {
		res = h.Recover(ctx, s.since, targetsOf(s.c, id))
	}
	if res.Reason != "" && res.Reason != history.ReasonNone {
		s.g.cfg.Logger.Debug("connection not recovered", "conn", s.c.Connection, "reason", res.Reason)
	}
	switch {
	case res.Recovery.Recovered:
		res.Recovery.Seq = s.since.Seq
	case start.Epoch == res.Recovery.Epoch:
		res.Recovery.Seq = start.Seq
	}
	s.send(wire.ServerFrame(wire.ActionRecovery, res.Recovery))
	sent := sendPaced(s.c.Conn, res.Frames)
	// The connection's position is the one it was told, or its last
	// replayed message: a catch-up after a NATS outage starts from there,
	// not from the stream's start.
	s.g.endHold(s.c, res.Recovery.Epoch, max(res.Last, res.Recovery.Seq), sent)
}

// targetsOf is what a replay for c covers (DESIGN.md §8: its current
// targets): its user and session, its groups as they are when the replay
// reads (the token's and the joined ones), and the filters it matches.
func targetsOf(c *hub.Client, id *auth.Identity) history.Targets {
	return history.Targets{User: id.User, Session: id.Session, Groups: c.Groups, Matches: c.Matches}
}

// sendPaced queues frames without ever filling more than half of the
// connection's queue, so that a replay larger than the queue does not close
// the connection as a slow consumer while the socket keeps taking data.
func sendPaced(conn *wsconn.Conn, frames [][]byte) bool {
	limit := max(1, conn.MaxQueue()/2)
	var deadline time.Time
	for _, f := range frames {
		for conn.Queued() >= limit {
			if deadline.IsZero() {
				deadline = time.Now().Add(replayWriteTimeout)
			} else if time.Now().After(deadline) {
				return false
			}
			time.Sleep(replayPace)
		}
		if err := conn.Send(wsconn.TextFrame(f)); err != nil {
			return false
		}
	}
	return true
}
