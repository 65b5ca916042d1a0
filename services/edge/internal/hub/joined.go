package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
)

// Joined groups (DESIGN §9). A connection's groups are its token's, its
// user's and its session's stored joins, and its own joins; the hub keeps
// the group topics (and so the NATS subscriptions) in step with that union.
// What a join means across edges, and how it is stored, is package rooms'.

// Loader reads the stored joins of a user or session (wire.KindUser,
// wire.KindSession): the groups and the revision they were stored at (0:
// nothing stored).
type Loader interface {
	Load(ctx context.Context, kind, key string) (rev uint64, groups []string, err error)
}

// target names a user or session.
type target struct{ kind, key string }

// stored is the joins stored for one user or session, as this edge last
// saw them. An entry exists only while a local connection belongs to its
// target, so that a later connection loads the store afresh.
type stored struct {
	rev    uint64
	groups []string
}

// Groups returns the connection's groups: its token's and the joined ones.
// It is nil before authentication. The slice must not be modified.
func (c *Client) Groups() []string {
	if g := c.groups.Load(); g != nil {
		return *g
	}
	return nil
}

// JoinedGroups returns the groups the connection is in by a join, not by its
// token.
func (c *Client) JoinedGroups() []string {
	id := c.Identity()
	if id == nil {
		return nil
	}
	var out []string
	for _, g := range c.Groups() {
		if !slices.Contains(id.Groups, g) {
			out = append(out, g)
		}
	}
	return out
}

func (c *Client) setGroups(g []string) {
	if g == nil {
		c.groups.Store(nil)
		return
	}
	c.groups.Store(&g)
}

// groupsLocked computes c's groups under identity id (nil: none).
func (h *Hub) groupsLocked(c *Client, id *auth.Identity) []string {
	if id == nil {
		return nil
	}
	gs := slices.Clone(id.Groups)
	if gs == nil {
		gs = []string{}
	}
	add := func(list []string) {
		for _, g := range list {
			if !slices.Contains(gs, g) {
				gs = append(gs, g)
			}
		}
	}
	if s := h.stored[target{wire.KindUser, id.User}]; s != nil && id.User != "" {
		add(s.groups)
	}
	if s := h.stored[target{wire.KindSession, id.Session}]; s != nil && id.Session != "" {
		add(s.groups)
	}
	add(c.own)
	return gs
}

// regroupLocked brings c's group topics in line with its groups, adds
// their errors to errs, and returns changed with c appended when its groups
// changed.
func (h *Hub) regroupLocked(c *Client, changed []*Client, errs *[]error) []*Client {
	was, is := c.Groups(), h.groupsLocked(c, c.identity.Load())
	for _, g := range was {
		if !slices.Contains(is, g) {
			*errs = append(*errs, h.leaveLocked(h.groups, g, c))
		}
	}
	for _, g := range is {
		if !slices.Contains(was, g) {
			*errs = append(*errs, h.joinLocked(h.groups, g, c, h.out.group))
		}
	}
	c.setGroups(is)
	if !slices.Equal(was, is) {
		changed = append(changed, c)
	}
	return changed
}

// groupsChanged tells GroupsChanged of each connection of changed; the
// caller holds no lock.
func (h *Hub) groupsChanged(changed []*Client) {
	if h.cfg.GroupsChanged == nil {
		return
	}
	for _, c := range changed {
		h.cfg.GroupsChanged(c)
	}
}

// forgetStoredLocked drops the stored entries of old's user and session
// when no local connection belongs to them any more.
func (h *Hub) forgetStoredLocked(old *auth.Identity) {
	if old == nil {
		return
	}
	if old.User != "" && h.users[old.User] == nil {
		delete(h.stored, target{wire.KindUser, old.User})
	}
	if old.Session != "" && h.sessions[old.Session] == nil {
		delete(h.stored, target{wire.KindSession, old.Session})
	}
}

// clientsLocked returns the authenticated local connections of a target:
// wire.KindUser, wire.KindSession, or wire.KindConn with the connection's
// local id as key.
func (h *Hub) clientsLocked(kind, key string) []*Client {
	var t *topic
	switch kind {
	case wire.KindUser:
		t = h.users[key]
	case wire.KindSession:
		t = h.sessions[key]
	case wire.KindConn:
		if c := h.clients[key]; c != nil && c.Identity() != nil {
			return []*Client{c}
		}
		return nil
	}
	if t == nil {
		return nil
	}
	out := make([]*Client, 0, len(t.clients))
	for c := range t.clients {
		out = append(out, c)
	}
	return out
}

// Join adds groups to the own joins of every local connection of the target
// (see clientsLocked), or removes them when join is false, and returns how
// many connections there were. Token groups stay whatever is removed. The
// change is in force once Confirm returns.
func (h *Hub) Join(kind, key string, groups []string, join bool) (int, error) {
	h.mu.Lock()
	var errs []error
	var changed []*Client
	defer func() { h.mu.Unlock(); h.groupsChanged(changed) }()
	clients := h.clientsLocked(kind, key)
	for _, c := range clients {
		if join {
			for _, g := range groups {
				if !slices.Contains(c.own, g) {
					c.own = append(c.own, g)
				}
			}
		} else {
			c.own = slices.DeleteFunc(slices.Clone(c.own), func(g string) bool { return slices.Contains(groups, g) })
		}
		changed = h.regroupLocked(c, changed, &errs)
	}
	return len(clients), errors.Join(errs...)
}

// SetStored records that the joins of a user or session are groups as of
// revision rev, and regroups the local connections of that target; an older
// revision than the one known changes nothing. It returns how many local
// connections the target has. Without one, nothing is kept: a later
// connection loads the store.
func (h *Hub) SetStored(kind, key string, rev uint64, groups []string) (int, error) {
	h.mu.Lock()
	var changed []*Client
	defer func() { h.mu.Unlock(); h.groupsChanged(changed) }()
	return h.setStoredLocked(kind, key, rev, groups, &changed)
}

func (h *Hub) setStoredLocked(kind, key string, rev uint64, groups []string, changed *[]*Client) (int, error) {
	clients := h.clientsLocked(kind, key)
	if len(clients) == 0 {
		return 0, nil
	}
	t := target{kind, key}
	if s := h.stored[t]; s != nil && s.rev >= rev {
		return len(clients), nil
	}
	h.stored[t] = &stored{rev: rev, groups: slices.Clone(groups)}
	var errs []error
	for _, c := range clients {
		*changed = h.regroupLocked(c, *changed, &errs)
	}
	return len(clients), errors.Join(errs...)
}

// loadStored reads the stored joins of id's user and session for c, which
// Authenticate has already indexed: a join stored after the load reaches c
// through SetStored, one stored before is in what Load returns. A target
// this edge already has an entry for is not read again: the entry is kept
// current by SetStored for as long as a local connection belongs to it.
func (h *Hub) loadStored(ctx context.Context, c *Client, id *auth.Identity) error {
	if h.cfg.Memberships == nil || id.User == "" {
		return nil
	}
	for _, t := range []target{{wire.KindUser, id.User}, {wire.KindSession, id.Session}} {
		if t.key == "" {
			continue
		}
		h.mu.RLock()
		known := h.stored[t] != nil
		h.mu.RUnlock()
		if known {
			continue
		}
		rev, groups, err := h.cfg.Memberships.Load(ctx, t.kind, t.key)
		if err != nil {
			return fmt.Errorf("%w: load joined groups: %w", ErrUnavailable, err)
		}
		// Recorded even when nothing is stored (rev 0), so that the
		// user's next tab here need not ask.
		if _, err := h.SetStored(t.kind, t.key, rev, groups); err != nil {
			return err
		}
	}
	return nil
}

// ReloadStored reads again the stored joins of every user and session this
// edge keeps an entry for, and puts in force those that changed: a change
// applied while the edge was cut from NATS never reached it (rooms.apply is
// core NATS), and the entry would otherwise stand until the target's next
// change. Revisions only grow, so a change applied meanwhile is not undone.
//
// Each read has timeout; the reads go on after one fails, and ReloadStored
// returns their errors.
func (h *Hub) ReloadStored(ctx context.Context, timeout time.Duration) error {
	if h.cfg.Memberships == nil {
		return nil
	}
	h.mu.RLock()
	targets := make([]target, 0, len(h.stored))
	for t := range h.stored {
		targets = append(targets, t)
	}
	h.mu.RUnlock()
	var errs []error
	for _, t := range targets {
		lctx, cancel := context.WithTimeout(ctx, timeout)
		rev, groups, err := h.cfg.Memberships.Load(lctx, t.kind, t.key)
		cancel()
		if err == nil {
			_, err = h.SetStored(t.kind, t.key, rev, groups)
		}
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// Confirm returns once the NATS server has confirmed every subscription
// made so far, so that a message published afterwards reaches the
// connections that joined a group before the call.
func (h *Hub) Confirm(ctx context.Context) error {
	if !h.nc.IsConnected() {
		return ErrUnavailable
	}
	if err := h.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("hub: confirm subscriptions: %w", err)
	}
	return nil
}
