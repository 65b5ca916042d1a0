package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/natsconn"
)

// replySlack is how many edges started since a change read which edges run
// its replies have room for.
const replySlack = 64

// change is the payload of <prefix>.rooms.apply.
type change struct {
	Kind   string   `json:"kind"`
	Key    string   `json:"key"` // for conn: "<edge>.<conn>"
	Join   bool     `json:"join"`
	Groups []string `json:"groups"`
	// Rev > 0: Groups is the whole stored set of a user or session at
	// this KV revision (presence on); else Groups is added or removed.
	Rev uint64 `json:"rev,omitempty"`
}

// applied is an edge's reply to a change.
type applied struct {
	Edge        string `json:"edge"`
	Connections int    `json:"connections"`
	Error       string `json:"error,omitempty"`
}

// refusal is an answer with an error code.
type refusal struct {
	code int
	msg  string
}

func (r *refusal) Error() string { return r.msg }

// coordinate takes one join or leave request to its answer.
func (s *Service) coordinate(m *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), warmUp+applyTimeout)
	defer cancel()
	rest := strings.TrimPrefix(m.Subject, s.cfg.Subjects.Prefix+".ctl.")
	op, rest, _ := strings.Cut(rest, ".")
	join := op == "join"
	err := s.run(ctx, rest, m.Data, join)
	var r *refusal
	switch {
	case err == nil:
		s.count(ctx, join, "ok")
		s.answer(m, wire.ControlAnswer{OK: true})
	case errors.As(err, &r):
		if r.code >= http.StatusInternalServerError {
			s.count(ctx, join, "unconfirmed")
			s.cfg.Logger.Warn("rooms: change not confirmed", "subject", m.Subject, "err", r.msg)
		} else {
			s.count(ctx, join, "refused")
		}
		s.answer(m, wire.ControlAnswer{Error: &wire.ControlError{Code: r.code, Message: r.msg}})
	}
}

func (s *Service) answer(m *nats.Msg, a wire.ControlAnswer) {
	if m.Reply == "" {
		return // a plain publish: nobody waits
	}
	data, _ := json.Marshal(a)
	if err := m.Respond(data); err != nil {
		s.cfg.Logger.Warn("rooms: answer", "subject", m.Subject, "err", err)
	}
}

// run validates, stores and applies a change; every error is a *refusal.
func (s *Service) run(ctx context.Context, target string, data []byte, join bool) error {
	kind, key, ok := parseTarget(target)
	if !ok {
		return &refusal{http.StatusBadRequest, fmt.Sprintf("bad target %q: want user.<user>, session.<session> or conn.<edge>.<conn>", target)}
	}
	mb, err := wire.DecodeMembership(data)
	if err != nil {
		return &refusal{http.StatusBadRequest, strings.TrimPrefix(err.Error(), "wire: ")}
	}
	c := change{Kind: kind, Key: key, Join: join, Groups: mb.Groups}
	live := s.live(ctx)
	wait := live
	if kind == wire.KindConn {
		edge, _, _ := strings.Cut(key, ".")
		if !live[edge] {
			return &refusal{http.StatusNotFound, "no such connection: edge " + edge + " is not running"}
		}
		wait = map[string]bool{edge: true}
	} else if s.cfg.Store != nil {
		rev, groups, err := s.cfg.Store.Change(ctx, kind, key, mb.Groups, join)
		switch {
		case errors.Is(err, ErrTooMany):
			return &refusal{http.StatusBadRequest, strings.TrimPrefix(err.Error(), "rooms: ")}
		case err != nil:
			s.cfg.Logger.Warn("rooms: store", "kind", kind, "err", err)
			return &refusal{http.StatusServiceUnavailable, "membership store unavailable; nothing changed"}
		}
		c.Rev, c.Groups = rev, groups
	}
	replies, err := s.gather(ctx, c, wait, len(live))
	if err != nil {
		return err
	}
	if kind == wire.KindConn && replies[0].Connections == 0 {
		return &refusal{http.StatusNotFound, "no such connection: " + key}
	}
	return nil
}

// gather publishes c to every edge and waits for the replies of the edges
// in wait. Every running edge answers: the edges known to run, and those
// that started since (up to replySlack of them).
func (s *Service) gather(ctx context.Context, c change, wait map[string]bool, edges int) ([]applied, error) {
	r, err := natsconn.SubscribeReplies(s.nc, edges+replySlack)
	if err != nil {
		return nil, &refusal{http.StatusServiceUnavailable, "messaging is unavailable"}
	}
	defer r.Close()
	data, _ := json.Marshal(c)
	if err := s.nc.PublishRequest(s.cfg.Subjects.RoomsApply(), r.Inbox, data); err != nil {
		return nil, &refusal{http.StatusServiceUnavailable, "messaging is unavailable"}
	}
	pending := make(map[string]bool, len(wait))
	for e := range wait {
		pending[e] = true
	}
	var out []applied
	for len(pending) > 0 {
		m, err := r.Next(ctx)
		if err != nil {
			left := make([]string, 0, len(pending))
			for e := range pending {
				left = append(left, e)
			}
			slices.Sort(left)
			msg := "not confirmed in time by edge " + strings.Join(left, ", ")
			if c.Rev > 0 {
				msg += "; the membership is stored"
			}
			return nil, &refusal{http.StatusServiceUnavailable, msg}
		}
		var a applied
		if json.Unmarshal(m.Data, &a) != nil || !pending[a.Edge] {
			continue
		}
		if a.Error != "" {
			return nil, &refusal{http.StatusServiceUnavailable, "edge " + a.Edge + " could not confirm: " + a.Error}
		}
		delete(pending, a.Edge)
		out = append(out, a)
	}
	return out, nil
}

// applyLoop puts changes in force on this edge: a batch of them, then one
// confirmation by the NATS server, then a reply to each.
func (s *Service) applyLoop(ctx context.Context) {
	batch := make([]*nats.Msg, 0, maxApplyBatch)
	replies := make([]applied, 0, maxApplyBatch)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.apply:
			batch = append(batch[:0], m)
		}
	more:
		for len(batch) < maxApplyBatch {
			select {
			case m := <-s.apply:
				batch = append(batch, m)
			default:
				break more
			}
		}
		replies = replies[:0]
		for _, m := range batch {
			replies = append(replies, s.applyOne(m))
		}
		cctx, cancel := context.WithTimeout(ctx, applyTimeout)
		err := s.members.Confirm(cctx)
		cancel()
		for i, m := range batch {
			r := replies[i]
			if r.Edge == "" || m.Reply == "" {
				continue // not ours to answer
			}
			if err != nil && r.Error == "" {
				r.Error = err.Error()
			}
			data, _ := json.Marshal(r)
			_ = s.nc.Publish(m.Reply, data)
		}
	}
}

// applyOne applies one change; an empty Edge in the result means the change
// named a connection of another edge.
func (s *Service) applyOne(m *nats.Msg) applied {
	r := applied{Edge: s.cfg.EdgeID}
	var c change
	if err := json.Unmarshal(m.Data, &c); err != nil || !validKind(c.Kind) {
		r.Error = "bad change"
		return r
	}
	var err error
	switch {
	case c.Kind == wire.KindConn:
		edge, conn, _ := strings.Cut(c.Key, ".")
		if edge != s.cfg.EdgeID {
			return applied{}
		}
		r.Connections, err = s.members.Join(c.Kind, conn, c.Groups, c.Join)
	case c.Rev > 0:
		r.Connections, err = s.members.SetStored(c.Kind, c.Key, c.Rev, c.Groups)
	default:
		r.Connections, err = s.members.Join(c.Kind, c.Key, c.Groups, c.Join)
	}
	if err != nil {
		s.cfg.Logger.Warn("rooms: apply", "kind", c.Kind, "err", err)
		r.Error = "subscription failed"
	}
	return r
}
