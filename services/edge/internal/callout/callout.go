// Package callout asks the application who a connection belongs to: it sends
// the upgrade's cookies, selected headers and token as a NATS request to
// EDGE_AUTH_CALLOUT_SUBJECT and turns the reply into an identity (DESIGN.md
// §3). Replies are cached by credential and concurrent asks for the same
// credential share one request, so a reconnect storm does not reach the
// application as a request storm.
package callout

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/singleflight"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
)

// refusalTTL bounds how long a refusal is cached: a user who just signed in
// must not wait long for the old "unknown session" to expire.
const refusalTTL = 5 * time.Second

// ErrUnavailable means the application did not answer (timeout, no
// responder, or a reply that is not a valid identity); the edge closes the
// connection with 1013 so the client retries later.
var ErrUnavailable = errors.New("callout: identity service unavailable")

// Refusal is the application's refusal of a connection.
type Refusal struct {
	Code    int
	Message string
}

func (r *Refusal) Error() string { return fmt.Sprintf("callout: refused %d %s", r.Code, r.Message) }

// Config says where and how to ask.
type Config struct {
	Subject   string
	Timeout   time.Duration
	CacheSize int
	CacheTTL  time.Duration
	Logger    *slog.Logger
}

// Client asks the application. It is safe for concurrent use.
type Client struct {
	nc     *nats.Conn                   // static
	cfg    Config                       // static
	cache  *lru.Cache[[32]byte, *entry] // static; nil: no cache
	flight singleflight.Group           // asks in progress, by credential
}

type entry struct {
	id      *auth.Identity
	refusal *Refusal
	until   time.Time
}

// New returns a client asking on cfg.Subject over nc.
func New(nc *nats.Conn, cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{nc: nc, cfg: cfg}
	if cfg.CacheSize > 0 && cfg.CacheTTL > 0 {
		c.cache, _ = lru.New[[32]byte, *entry](cfg.CacheSize) // fails only on a size <= 0
	}
	return c
}

// Identify returns the identity the application gives req's credentials,
// a *Refusal, or ErrUnavailable. The identity's Language may be empty.
// Concurrent asks for one credential share one request, bounded by the
// configured timeout whoever waits; each caller waits at most until ctx is
// done.
func (c *Client) Identify(ctx context.Context, req *wire.CalloutRequest) (*auth.Identity, error) {
	key := credentialKey(req)
	if id, err, ok := c.cached(key); ok {
		return id, err
	}
	done := c.flight.DoChan(string(key[:]), func() (any, error) {
		// A flight that ended between the look-up above and this one
		// has filled the cache.
		if id, err, ok := c.cached(key); ok {
			return id, err
		}
		id, err := c.ask(req)
		c.store(key, id, err)
		return id, err
	})
	select {
	case r := <-done:
		id, _ := r.Val.(*auth.Identity)
		return id, r.Err
	case <-ctx.Done():
		return nil, ErrUnavailable
	}
}

// credentialKey is what identifies a credential: the token and the cookies.
func credentialKey(req *wire.CalloutRequest) [32]byte {
	h := sha256.New()
	h.Write([]byte(req.Token))
	cookies, _ := json.Marshal(req.Cookies) // map keys are sorted
	h.Write([]byte{0})
	h.Write(cookies)
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (c *Client) cached(key [32]byte) (*auth.Identity, error, bool) {
	if c.cache == nil {
		return nil, nil, false
	}
	e, ok := c.cache.Get(key)
	if !ok {
		return nil, nil, false
	}
	if time.Now().After(e.until) {
		c.cache.Remove(key)
		return nil, nil, false
	}
	if e.refusal != nil {
		return nil, e.refusal, true
	}
	return e.id, nil, true
}

func (c *Client) store(key [32]byte, id *auth.Identity, err error) {
	if c.cache == nil {
		return
	}
	e := &entry{until: time.Now().Add(c.cfg.CacheTTL)}
	var refusal *Refusal
	switch {
	case errors.As(err, &refusal):
		e.refusal = refusal
		e.until = time.Now().Add(min(c.cfg.CacheTTL, refusalTTL))
	case err != nil:
		return // unavailable: ask again next time
	default:
		e.id = id
		if !id.Expires.IsZero() && id.Expires.Before(e.until) {
			e.until = id.Expires
		}
	}
	c.cache.Add(key, e)
}

// ask makes one request; it is shared by every caller waiting for the
// credential, so its deadline is its own, not one caller's.
func (c *Client) ask(req *wire.CalloutRequest) (*auth.Identity, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("callout: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	msg, err := c.nc.RequestWithContext(ctx, c.cfg.Subject, data)
	if err != nil {
		c.cfg.Logger.WarnContext(ctx, "auth callout failed", "subject", c.cfg.Subject, "err", err)
		return nil, ErrUnavailable
	}
	var resp wire.CalloutResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		c.cfg.Logger.ErrorContext(ctx, "auth callout reply is not JSON", "subject", c.cfg.Subject, "err", err)
		return nil, ErrUnavailable
	}
	if resp.Error != nil {
		code := resp.Error.Code
		if !wire.ValidErrorCode(code) {
			code = wire.CodeUnauthorized
		}
		return nil, &Refusal{Code: code, Message: resp.Error.Message}
	}
	var expires time.Time
	if resp.Expires > 0 {
		expires = time.Unix(resp.Expires, 0)
		if expires.Before(time.Now()) {
			return nil, &Refusal{Code: wire.CodeUnauthorized, Message: "session has expired"}
		}
	}
	id, err := auth.NewIdentity(resp.User, resp.Session, resp.Groups, resp.Language, expires, resp.Props, "user", "session", "groups")
	if err != nil {
		c.cfg.Logger.ErrorContext(ctx, "auth callout reply is not a valid identity", "subject", c.cfg.Subject, "err", err)
		return nil, ErrUnavailable
	}
	return id, nil
}
