package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/edgetest"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/callout"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

const testSecret = "gateway-unit-test-secret"

// failingRegistry is the real hub (on a fake NATS) whose Authenticate
// fails with err while err is set: what no NATS fault can produce on
// demand, such as the per-user limit.
type failingRegistry struct {
	*hub.Hub
	mu  sync.Mutex
	err error
}

func (r *failingRegistry) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func (r *failingRegistry) Authenticate(ctx context.Context, c *hub.Client, id *auth.Identity) error {
	r.mu.Lock()
	err := r.err
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return r.Hub.Authenticate(ctx, c, id)
}

// unit is one session of a gateway on seams: a hub on a fake NATS, the
// fake as publisher, and a socket whose far end reads what the session
// writes.
type unit struct {
	s    *session
	nats *edgetest.FakeNATS
	reg  *failingRegistry
	peer *edgetest.Peer
}

func newUnit(t *testing.T) *unit {
	t.Helper()
	fake := &edgetest.FakeNATS{}
	subjects := wire.NewSubjects("ws")
	reg := &failingRegistry{Hub: hub.New(fake, hub.Config{EdgeID: "e1", Subjects: subjects, PingInterval: time.Minute, AuthTimeout: time.Minute})}
	verifier, err := auth.NewVerifier(auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	g := New(Config{EdgeID: "e1", Subjects: subjects, AllowAnonymous: true, SendQueue: 16}, reg, fake, verifier)
	server, far := edgetest.SocketPair(t)
	conn := wsconn.New(server, 16, stats.New(nil, nil).Shard(), nil)
	t.Cleanup(func() { conn.Abort(); conn.Wait() })
	c := hub.NewClient(conn, "e1", "c1", "127.0.0.1", "", "")
	reg.Add(c)
	t.Cleanup(func() { reg.Remove(c) })
	return &unit{s: &session{g: g, c: c}, nats: fake, reg: reg, peer: edgetest.NewPeer(t, far)}
}

func token(t *testing.T, user string, groups ...string) string {
	t.Helper()
	return edgetest.Token(t, testSecret, jwt.MapClaims{"sub": user, "groups": groups})
}

// expectError fails the test unless the next frame is the authentication
// error with code.
func (u *unit) expectError(t *testing.T, code int) {
	t.Helper()
	f := u.peer.Expect(wire.ErrorAction(wire.ActionAuthentication))
	if got, msg := f.Error(); got != code {
		t.Fatalf("error %d %q, want %d", got, msg, code)
	}
}

// TestAdmit: the ok frame and the lifecycle event follow a confirmed
// admission only; a refused one answers with its error, closes the
// connection, and leaves it unauthenticated. Fails when admit sends ok
// before (or despite) the hub's answer, or maps an error to another code.
func TestAdmit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		setup      func(*unit)
		wantCode   int // the error frame's code (0: ok)
		wantClose  int
		wantSubbed bool
	}{
		{name: "confirmed", setup: func(*unit) {}, wantSubbed: true},
		{name: "user limit", setup: func(u *unit) { u.reg.fail(hub.ErrUserLimit) },
			wantCode: wire.CodeTooManyRequests, wantClose: wire.CloseTryLater},
		{name: "nats disconnected", setup: func(u *unit) { u.nats.SetConnected(false) },
			wantCode: wire.CodeUnavailable, wantClose: wire.CloseTryLater},
		{name: "flush fails", setup: func(u *unit) { u.nats.FailFlush(edgetest.ErrFake) },
			wantCode: wire.CodeUnavailable, wantClose: wire.CloseTryLater},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnit(t)
			tc.setup(u)
			u.s.authenticate(token(t, "alice", "team"))
			if tc.wantCode == 0 {
				u.peer.Expect(wire.ActionAuthentication)
				if id := u.s.c.Identity(); id == nil || id.User != "alice" {
					t.Fatalf("identity %+v, want alice's", id)
				}
				if got, want := u.nats.Published(), []string{"ws.in." + wire.ActionAuthentication}; !slices.Equal(got, want) {
					t.Fatalf("published %v, want %v", got, want)
				}
			} else {
				u.expectError(t, tc.wantCode)
				u.peer.ExpectClose(tc.wantClose)
				if id := u.s.c.Identity(); id != nil {
					t.Fatalf("identity %+v after a refused admission", id)
				}
				if got := u.nats.Published(); len(got) != 0 {
					t.Fatalf("published %v for a refused admission", got)
				}
			}
			// The subscriptions were made in both cases; a refused
			// admission dropped them again (the hub's concern).
			if got := u.nats.Subscriptions("ws.send.group.team"); (got > 0) != (tc.wantSubbed || tc.wantCode == wire.CodeUnavailable) {
				t.Fatalf("%d subscriptions to the token's group", got)
			}
		})
	}
}

// TestRenew: a fresh token for the same user replaces the identity after
// the hub confirms it; another user's closes 4401; an unconfirmed renewal
// answers 503 and keeps the connection and its old identity. Fails when
// renew skips the user check, or closes (or changes the identity) on an
// unconfirmed renewal.
func TestRenew(t *testing.T) {
	for _, tc := range []struct {
		name      string
		user      string
		setup     func(*unit)
		wantCode  int
		wantClose int
		wantGroup string // the group of the identity afterwards
	}{
		{name: "same user", user: "alice", setup: func(*unit) {}, wantGroup: "new"},
		{name: "other user", user: "bob", setup: func(*unit) {},
			wantCode: wire.CodeUnauthorized, wantClose: wire.CloseAuthFailed, wantGroup: "old"},
		{name: "unconfirmed", user: "alice", setup: func(u *unit) { u.nats.SetConnected(false) },
			wantCode: wire.CodeUnavailable, wantGroup: "old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnit(t)
			u.s.authenticate(token(t, "alice", "old"))
			u.peer.Expect(wire.ActionAuthentication)
			tc.setup(u)
			u.s.renew(token(t, tc.user, "new"))
			if tc.wantCode == 0 {
				u.peer.Expect(wire.ActionAuthentication)
			} else {
				u.expectError(t, tc.wantCode)
			}
			if got := u.s.c.Conn.CloseCode(); got != tc.wantClose {
				t.Fatalf("close code %d, want %d", got, tc.wantClose)
			}
			if tc.wantClose != 0 {
				u.peer.ExpectClose(tc.wantClose)
			}
			id := u.s.c.Identity()
			if id == nil || id.User != "alice" || !slices.Equal(id.Groups, []string{tc.wantGroup}) {
				t.Fatalf("identity %+v, want alice in %s", id, tc.wantGroup)
			}
		})
	}
}

// TestRefuse: each failed identification gets its error code and close
// code (DESIGN §2). Fails when a case of refuse maps to another pair.
func TestRefuse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err       error
		wantCode  int
		wantClose int
	}{
		{"callout unavailable", callout.ErrUnavailable, wire.CodeUnavailable, wire.CloseTryLater},
		{"callout 503", &callout.Refusal{Code: 503, Message: "down"}, wire.CodeUnavailable, wire.CloseTryLater},
		{"callout 403", &callout.Refusal{Code: wire.CodeForbidden, Message: "banned"}, wire.CodeForbidden, wire.CloseForbidden},
		{"callout 401", &callout.Refusal{Code: wire.CodeUnauthorized, Message: "who"}, wire.CodeUnauthorized, wire.CloseAuthFailed},
		{"bad token", &auth.Error{Kind: auth.KindMalformed, Reason: "bad"}, wire.CodeUnauthorized, wire.CloseAuthFailed},
		{"other error", errors.New("boom"), wire.CodeUnauthorized, wire.CloseAuthFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newUnit(t)
			u.s.refuse(tc.err)
			u.expectError(t, tc.wantCode)
			u.peer.ExpectClose(tc.wantClose)
		})
	}
}

// TestAuthenticate_BadTokenIsRefusedBeforeTheHub: a token the verifier
// refuses never reaches the registry. Fails when authenticate admits
// before identifying.
func TestAuthenticate_BadTokenIsRefusedBeforeTheHub(t *testing.T) {
	u := newUnit(t)
	u.s.authenticate(edgetest.Token(t, "another secret", jwt.MapClaims{"sub": "mallory"}))
	u.expectError(t, wire.CodeUnauthorized)
	u.peer.ExpectClose(wire.CloseAuthFailed)
	if u.s.c.Identity() != nil || u.nats.Subscriptions("ws.send.user.mallory") != 0 {
		t.Fatal("a refused token reached the hub")
	}
}
