package hub

// The registry: connections indexed by user, group and session, each index
// entry holding its NATS subscription while a local connection needs it.

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/edge/internal/auth"
)

// topic is one user, group or session with its local connections and the
// NATS subscription that exists exactly while clients is not empty.
type topic struct {
	clients map[*Client]struct{}
	sub     *nats.Subscription
}

// Errors of Authenticate.
var (
	// ErrUnavailable: NATS is not connected, so subscriptions cannot be confirmed.
	ErrUnavailable = errors.New("hub: messaging is unavailable")
	// ErrUserLimit: the user already holds MaxPerUser connections here.
	ErrUserLimit = errors.New("hub: too many connections for this user")
)

// Add registers a client that is not authenticated yet: it receives nothing
// until Authenticate, and the timer closes it after AuthTimeout.
func (h *Hub) Add(c *Client) {
	h.mu.Lock()
	h.clients[c.ID] = c
	h.mu.Unlock()
	h.timer.add(c, h.cfg.AuthTimeout)
}

// Counts returns the number of clients by state, for the connections gauge.
func (h *Hub) Counts() (pending, anonymous, authenticated int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.clients {
		switch id := c.Identity(); {
		case id == nil:
			pending++
		case id.User == "":
			anonymous++
		default:
			authenticated++
		}
	}
	return pending, anonymous, authenticated
}

// Len is the number of registered clients.
func (h *Hub) Len() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.clients)
}

// Authenticate gives c its identity, subscribes what it needs, and returns
// once the NATS server has confirmed those subscriptions, so that the first
// message published to the client after this call is never lost.
func (h *Hub) Authenticate(ctx context.Context, c *Client, id *auth.Identity) error {
	h.mu.Lock()
	if old := c.identity.Load(); h.cfg.MaxPerUser > 0 && id.User != "" && (old == nil || old.User != id.User) {
		if t := h.users[id.User]; t != nil && len(t.clients) >= h.cfg.MaxPerUser {
			h.mu.Unlock()
			return ErrUserLimit
		}
	}
	old := c.identity.Swap(id)
	h.timer.identityChanged(c, h.cfg.AuthTimeout)
	if err := h.reindexLocked(c, old, id); err != nil {
		h.mu.Unlock()
		return err
	}
	h.mu.Unlock()
	var err error
	if lerr := h.loadStored(ctx, c, id); lerr != nil {
		err = lerr
	} else if !h.nc.IsConnected() {
		// NATS replays the subscriptions when it is back, but nobody can
		// confirm them now: the promise of the ok frame cannot be kept.
		err = ErrUnavailable
	} else if ferr := h.nc.FlushWithContext(ctx); ferr != nil {
		err = fmt.Errorf("hub: confirm subscriptions: %w", ferr)
	}
	if err != nil {
		// A connection that was not authenticated stays so: it receives
		// nothing, and its end is no lifecycle event. A renewal that could
		// not be confirmed leaves the identity it had, with its expiry.
		h.mu.Lock()
		if c.identity.CompareAndSwap(id, old) {
			h.timer.identityChanged(c, h.cfg.AuthTimeout)
			if uerr := h.reindexLocked(c, id, old); uerr != nil {
				h.cfg.Logger.Warn("unsubscribe failed", "conn", c.ID, "err", uerr)
			}
		}
		h.mu.Unlock()
	}
	return err
}

// Registered reports whether c is registered (Add) and not removed yet.
func (h *Hub) Registered(c *Client) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.clients[c.ID] == c
}

// Remove unregisters c and drops the subscriptions nobody needs any more.
func (h *Hub) Remove(c *Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c.ID]; !ok {
		return
	}
	delete(h.clients, c.ID)
	h.timer.remove(c)
	groups := c.Groups()
	if err := h.reindexLocked(c, c.identity.Load(), nil); err != nil {
		h.cfg.Logger.Warn("unsubscribe failed", "conn", c.ID, "err", err)
	}
	c.setGroups(groups) // for its Client/disconnection envelope
}

// reindexLocked moves c from the topics of old to those of id (either may be nil).
func (h *Hub) reindexLocked(c *Client, old, id *auth.Identity) error {
	var errs []error
	s := h.out
	move := func(topics map[string]*topic, was, is []string, subject func(string) string) {
		for _, k := range was {
			if !contains(is, k) {
				errs = append(errs, h.leaveLocked(topics, k, c))
			}
		}
		for _, k := range is {
			if !contains(was, k) {
				errs = append(errs, h.joinLocked(topics, k, c, subject))
			}
		}
	}
	var wasUser, isUser, wasSession, isSession []string
	if old != nil {
		wasUser, wasSession = nonEmpty(old.User), nonEmpty(old.Session)
	}
	if id != nil {
		isUser, isSession = nonEmpty(id.User), nonEmpty(id.Session)
	}
	move(h.users, wasUser, isUser, s.user)
	move(h.sessions, wasSession, isSession, s.session)
	h.forgetStoredLocked(old)
	// Groups: the token's and the joined ones (joined.go).
	wasGroups, isGroups := c.Groups(), h.groupsLocked(c, id)
	move(h.groups, wasGroups, isGroups, s.group)
	c.setGroups(isGroups)
	return errors.Join(errs...)
}

func (h *Hub) joinLocked(topics map[string]*topic, key string, c *Client, subject func(string) string) error {
	t := topics[key]
	if t == nil {
		sub, err := h.nc.ChanSubscribe(subject(key), h.inbox)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject(key), err)
		}
		t = &topic{clients: map[*Client]struct{}{}, sub: sub}
		topics[key] = t
		h.cfg.Stats.Subscriptions.Add(1)
	}
	t.clients[c] = struct{}{}
	return nil
}

func (h *Hub) leaveLocked(topics map[string]*topic, key string, c *Client) error {
	t := topics[key]
	if t == nil {
		return nil
	}
	delete(t.clients, c)
	if len(t.clients) > 0 {
		return nil
	}
	delete(topics, key)
	h.cfg.Stats.Subscriptions.Add(-1)
	if err := t.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("unsubscribe %s: %w", t.sub.Subject, err)
	}
	return nil
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (h *Hub) snapshot(dst []*Client) []*Client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, c := range h.clients {
		dst = append(dst, c)
	}
	return dst
}
