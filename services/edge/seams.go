package edge

import (
	"github.com/wsgate/wsgate/services/edge/internal/gateway"
	"github.com/wsgate/wsgate/services/edge/internal/presence"
)

// The edge wires the consumers' interfaces to their implementations; the
// checks that need both sides and belong to neither stand here (the others
// stand beside the interface: hub.Messaging, gateway.Registry and
// gateway.Publisher in their packages, hub.Loader and rooms.Members in rooms).
var _ gateway.Presence = (*presence.Writer)(nil)
