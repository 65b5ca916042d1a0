package hub

import (
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
)

// Client is one connection as the hub sees it.
type Client struct {
	Conn       *wsconn.Conn // static after construction
	ID         string       // static: connection id, unique within the edge
	Connection string       // static: "<edge>.<ID>", as published in envelopes
	IP         string       // static
	UserAgent  string       // static
	Origin     string       // static
	created    time.Time    // static

	identity atomic.Pointer[auth.Identity] // nil while not authenticated
	timer    timerState                    // owned by the hub's timer

	groups atomic.Pointer[[]string] // token ∪ joined groups; written under Hub.mu (joined.go)
	own    []string                 // groups joined by this connection alone; owned by Hub.mu
	pos    atomic.Pointer[position] // history position (DESIGN.md §8); nil with history off
}

// NewClient returns a client that is not authenticated yet.
func NewClient(conn *wsconn.Conn, edgeID, id, ip, userAgent, origin string) *Client {
	return &Client{
		Conn: conn, ID: id, Connection: edgeID + "." + id,
		IP: ip, UserAgent: userAgent, Origin: origin, created: time.Now(),
	}
}

// Identity returns the client's identity, or nil before authentication.
func (c *Client) Identity() *auth.Identity { return c.identity.Load() }

// property returns the value of a filter property for this client.
func (c *Client) property(id *auth.Identity, name string) (string, bool) {
	switch name {
	case "language":
		return id.Language, true
	case "ip":
		return c.IP, true
	case "user_agent":
		return c.UserAgent, true
	case "origin":
		return c.Origin, true
	}
	v, ok := id.Props[name]
	return v, ok
}
