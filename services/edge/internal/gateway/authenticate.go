package gateway

// Authentication of a connection: the first identity (token, callout or
// anonymous), its admission to the hub before ok, and renewal with a fresh
// token on a live connection (DESIGN §2, §3).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/callout"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
)

func (s *session) onAuthentication(f wire.ClientFrame) {
	token, since, err := tokenOf(f.Details)
	if err != nil {
		s.send(wire.AppendServerFrame(nil, wire.ErrorAction(wire.ActionAuthentication), errorDetails(wire.CodeBadRequest, err.Error()), f.Ref))
		return
	}
	current := s.c.Identity()
	if since != nil && current == nil && s.g.cfg.History != nil {
		s.setSince(wire.ParseSince(since))
	}
	switch {
	case current == nil && token == "" && s.callout == nil:
		if !s.g.cfg.AllowAnonymous {
			s.authFail(auth.KindMissing, "token is missing")
			return
		}
		if !s.acquireAuth() {
			return
		}
		s.admitAndRecover(&auth.Identity{Groups: []string{}, Language: s.language("")})
	case current == nil:
		s.authenticate(token)
	case token == "":
		s.send(okFrame) // already authenticated: nothing changes
	default:
		s.renew(token)
	}
}

// tokenOf reads the details of a Client/authentication frame: null or an
// object with a token, a since (DESIGN.md §8), or both. since is returned
// unparsed: a malformed one costs the recovery, not the authentication.
func tokenOf(details json.RawMessage) (token string, since json.RawMessage, err error) {
	if len(details) == 0 || bytes.Equal(details, []byte("null")) {
		return "", nil, nil
	}
	var d struct {
		Token *string         `json:"token"`
		Since json.RawMessage `json:"since"`
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(details, &d); err != nil || d.Token == nil && d.Since == nil && (json.Unmarshal(details, &fields) != nil || len(fields) > 0) {
		// {} is null's equal; an object with neither field is a mistake.
		return "", nil, errors.New(`details must be null or {"token": "<jwt>", "since": {"epoch": "<epoch>", "seq": <n>}} (both optional)`)
	}
	if d.Token != nil {
		token = *d.Token
	}
	return token, d.Since, nil
}

var okFrame = wire.ServerFrame(wire.ActionAuthentication, "ok")

func (s *session) authenticate(token string) {
	if !s.acquireAuth() {
		return
	}
	id, err := s.identify(token)
	if err != nil {
		s.g.auths.release()
		s.refuse(err)
		return
	}
	s.admitAndRecover(s.localized(id))
}

// admitAndRecover admits the connection with the authentication slot its
// caller took, gives the slot back, then recovers what the connection
// missed. A recovery waits for a budget of its own (EDGE_HISTORY_REPLAYS,
// up to EDGE_HISTORY_REPLAY_WAIT): holding an authentication slot
// meanwhile filled the authentication queue in a reconnect storm, and the
// edge turned away with 1013 the very clients it was recovering.
func (s *session) admitAndRecover(id *auth.Identity) {
	recovering, start := s.admit(id)
	s.g.auths.release()
	if recovering {
		s.recover(id, start)
	}
}

// admit makes the connection authenticated. The ok frame and the lifecycle
// event follow the NATS server's confirmation of the subscriptions (DESIGN §4).
// It reports whether the connection is to recover next, and from where it
// starts when nothing is recovered.
func (s *session) admit(id *auth.Identity) (recovering bool, start wire.Since) {
	ctx, cancel := context.WithTimeout(context.Background(), authPublishTimeout)
	defer cancel()
	// With history, the first authentication is followed by a recovery:
	// live stored messages wait for it from the moment they can arrive.
	recovering = s.g.cfg.History != nil && s.c.Identity() == nil
	// start is read before the subscriptions: see History.Position.
	if recovering {
		start = s.g.cfg.History.Position()
		s.g.hub.BeginRecovery(s.c)
	}
	err := s.g.hub.Authenticate(ctx, s.c, id)
	if errors.Is(err, hub.ErrUserLimit) {
		s.g.cfg.Stats.AuthFailed("user_limit")
		s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), wire.CodeTooManyRequests, "too many connections for this user"))
		s.close(wire.CloseTryLater, "too many connections for this user")
		return false, wire.Since{}
	}
	if err != nil {
		s.g.cfg.Logger.Error("authenticate connection", "conn", s.c.Connection, "user", id.User, "err", err)
		s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), wire.CodeUnavailable, "messaging is unavailable, try again later"))
		s.close(wire.CloseTryLater, "messaging is unavailable")
		return false, wire.Since{}
	}
	// The record comes first: a connection told it is live leaves
	// presence with a Client/disconnection, even if this edge dies now.
	if p := s.g.cfg.Presence; p != nil && id.User != "" {
		p.Add(ctx, s.c)
	}
	s.send(okFrame)
	s.publishEvent(wire.ActionAuthentication, nil, eventAuthentication)
	return recovering, start
}

// renew replaces the identity of a live connection with a fresh token's,
// which must name the same user.
func (s *session) renew(token string) {
	if !s.acquireAuth() {
		return
	}
	defer s.g.auths.release()
	id, err := s.identify(token)
	if err != nil {
		s.refuse(err)
		return
	}
	if id.User != s.c.Identity().User {
		s.authFail(auth.KindOtherUser, "token is for another user")
		return
	}
	id = s.localized(id)
	ctx, cancel := context.WithTimeout(context.Background(), authPublishTimeout)
	defer cancel()
	if err := s.g.hub.Authenticate(ctx, s.c, id); err != nil {
		// The subscriptions of the new identity are not confirmed, so ok
		// would break its promise (DESIGN §2, §4). The connection keeps
		// the identity it had, whose subscriptions stand, and the client
		// may renew again.
		s.g.cfg.Stats.AuthFailed("renew_unavailable")
		s.g.cfg.Logger.Warn("renew connection identity", "conn", s.c.Connection, "err", err)
		s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), wire.CodeUnavailable, "renewal not confirmed: messaging is unavailable, try again later"))
		return
	}
	if p := s.g.cfg.Presence; p != nil {
		p.Changed(s.c)
	}
	s.send(okFrame)
}

// acquireAuth takes a slot of the authentication budget; when even its
// queue is full, it answers 503 and reports false. A connection not yet
// authenticated is then closed 1013; a renewing one keeps its identity.
func (s *session) acquireAuth() bool {
	if s.g.auths.acquire() {
		return true
	}
	s.g.cfg.Stats.AuthFailed("overloaded")
	s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), wire.CodeUnavailable, "edge is busy authenticating, try again later"))
	if s.c.Identity() == nil {
		s.close(wire.CloseTryLater, "edge is busy")
	}
	return false
}

// identify turns a token (or, through the callout, the upgrade's cookies)
// into an identity: tokens go to the verifier when it has keys, everything
// else to the callout when one is configured.
func (s *session) identify(token string) (*auth.Identity, error) {
	if s.callout == nil || (token != "" && s.g.verifier.Enabled()) {
		return s.g.verifier.Verify(token)
	}
	req := *s.callout
	req.Token = token
	ctx, cancel := context.WithTimeout(context.Background(), authPublishTimeout)
	defer cancel()
	return s.g.cfg.Callout.Identify(ctx, &req)
}

// refuse answers a failed identification: 4401 for bad credentials, 4403 for
// a 403 refusal, 1013 when the identity service cannot answer now.
func (s *session) refuse(err error) {
	var refusal *callout.Refusal
	var ae *auth.Error
	switch {
	case errors.Is(err, callout.ErrUnavailable), errors.As(err, &refusal) && refusal.Code >= 500:
		s.g.cfg.Stats.AuthFailed("callout_unavailable")
		s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), wire.CodeUnavailable, "identity service unavailable, try again later"))
		s.close(wire.CloseTryLater, "identity service unavailable")
	case errors.As(err, &refusal) && refusal.Code == wire.CodeForbidden:
		s.g.cfg.Stats.AuthFailed("callout_forbidden")
		s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), refusal.Code, refusal.Message))
		s.close(wire.CloseForbidden, refusal.Message)
	case errors.As(err, &refusal):
		s.g.cfg.Stats.AuthFailed("callout_refused")
		s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), refusal.Code, refusal.Message))
		s.close(wire.CloseAuthFailed, refusal.Message)
	case errors.As(err, &ae):
		s.authFail(ae.Kind, ae.Reason)
	default:
		s.authFail(auth.KindMalformed, "token is invalid")
	}
}

func (s *session) authFail(kind, reason string) {
	s.g.cfg.Stats.AuthFailed(kind)
	s.send(wire.ErrorFrame(wire.ErrorAction(wire.ActionAuthentication), wire.CodeUnauthorized, reason))
	s.close(wire.CloseAuthFailed, reason)
}

// localized returns a copy of id (identities may be shared by a cache) with
// the language fallbacks applied.
func (s *session) localized(id *auth.Identity) *auth.Identity {
	cp := *id
	cp.Language = s.language(id.Language)
	return &cp
}

// language applies the fallbacks: the token's lang, the upgrade's first
// Accept-Language tag, then "en".
func (s *session) language(fromToken string) string {
	if fromToken != "" {
		return fromToken
	}
	if l := auth.FirstLanguage(s.acceptLanguage); l != "" {
		return l
	}
	return "en"
}
