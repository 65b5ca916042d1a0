// Package callout asks the application who a connection belongs to: it sends
// the upgrade's cookies, selected headers and token as a NATS request to
// EDGE_AUTH_CALLOUT_SUBJECT and turns the reply into an identity (DESIGN.md
// §3). Replies are cached by credential and concurrent asks for the same
// credential share one request, so a reconnect storm does not reach the
// application as a request storm.
package callout

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

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
	nc  *nats.Conn // static
	cfg Config     // static

	mu      sync.Mutex
	entries map[[32]byte]*list.Element // owned by mu; values are *entry
	lru     *list.List                 // owned by mu; front = most recent
	flights map[[32]byte]*flight       // owned by mu: requests in progress
}

type entry struct {
	key     [32]byte
	id      *auth.Identity
	refusal *Refusal
	until   time.Time
}

type flight struct {
	done chan struct{}
	id   *auth.Identity
	err  error
}

// New returns a client asking on cfg.Subject over nc.
func New(nc *nats.Conn, cfg Config) *Client {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{nc: nc, cfg: cfg, entries: map[[32]byte]*list.Element{}, lru: list.New(), flights: map[[32]byte]*flight{}}
}

// Identify returns the identity the application gives req's credentials,
// a *Refusal, or ErrUnavailable. The identity's Language may be empty.
func (c *Client) Identify(ctx context.Context, req *wire.CalloutRequest) (*auth.Identity, error) {
	key := credentialKey(req)
	c.mu.Lock()
	if id, err, ok := c.cachedLocked(key); ok {
		c.mu.Unlock()
		return id, err
	}
	if f, ok := c.flights[key]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.id, f.err
		case <-ctx.Done():
			return nil, ErrUnavailable
		}
	}
	f := &flight{done: make(chan struct{})}
	c.flights[key] = f
	c.mu.Unlock()

	f.id, f.err = c.ask(ctx, req)

	c.mu.Lock()
	delete(c.flights, key)
	c.storeLocked(key, f.id, f.err)
	c.mu.Unlock()
	close(f.done)
	return f.id, f.err
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

func (c *Client) cachedLocked(key [32]byte) (*auth.Identity, error, bool) {
	el, ok := c.entries[key]
	if !ok {
		return nil, nil, false
	}
	e := el.Value.(*entry)
	if time.Now().After(e.until) {
		c.lru.Remove(el)
		delete(c.entries, key)
		return nil, nil, false
	}
	c.lru.MoveToFront(el)
	if e.refusal != nil {
		return nil, e.refusal, true
	}
	return e.id, nil, true
}

func (c *Client) storeLocked(key [32]byte, id *auth.Identity, err error) {
	if c.cfg.CacheSize <= 0 || c.cfg.CacheTTL <= 0 {
		return
	}
	e := &entry{key: key, until: time.Now().Add(c.cfg.CacheTTL)}
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
	if el, ok := c.entries[key]; ok {
		c.lru.Remove(el)
	}
	c.entries[key] = c.lru.PushFront(e)
	for c.lru.Len() > c.cfg.CacheSize {
		oldest := c.lru.Back()
		c.lru.Remove(oldest)
		delete(c.entries, oldest.Value.(*entry).key)
	}
}

func (c *Client) ask(ctx context.Context, req *wire.CalloutRequest) (*auth.Identity, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("callout: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
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
		if code < 400 || code > 599 {
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
