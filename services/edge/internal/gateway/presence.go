package gateway

import (
	"context"

	"github.com/wsgate/wsgate/services/edge/internal/hub"
)

// Presence records the authenticated connections of users in the shared
// presence (DESIGN.md §9); the gateway tells it when one starts, changes
// identity and ends.
type Presence interface {
	// Add records c, just authenticated with a user, and returns once the
	// record is stored or could not be (ctx bounds the wait).
	Add(ctx context.Context, c *hub.Client)
	// Changed updates c's record after a renewal changed its identity.
	Changed(c *hub.Client)
	// Remove deletes c's record and then calls ended, which publishes the
	// connection's end, unless the record was reaped (and the end
	// published) by a dispatcher first.
	Remove(c *hub.Client, ended func())
}
