package hub

// Closing connections on purpose: ctl.close kicks, the drain and the abort.

import (
	"context"
	"strings"
	"time"

	"github.com/wsgate/wsgate/api/wire"
)

// kick closes the connections of a ctl.close.<kind>.<id> subject.
func (h *Hub) kick(target string) {
	kind, key, _ := strings.Cut(target, ".")
	var victims []*Client
	h.mu.RLock()
	switch kind {
	case "user":
		if t := h.users[key]; t != nil {
			for c := range t.clients {
				victims = append(victims, c)
			}
		}
	case "session":
		if t := h.sessions[key]; t != nil {
			for c := range t.clients {
				victims = append(victims, c)
			}
		}
	case "conn":
		_, id, _ := strings.Cut(key, ".")
		if c := h.clients[id]; c != nil {
			victims = append(victims, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range victims {
		_ = c.Conn.Send(serverClose)
		if c.Conn.Close(wire.CloseNormal, "closed by server") {
			h.cfg.Stats.Kicked()
		}
	}
}

// CloseAll closes every client with code, spreading the closes evenly over
// spread so that they do not all reconnect elsewhere at the same instant.
// It returns when the last close is queued or ctx is done (then the rest are
// closed at once).
func (h *Hub) CloseAll(ctx context.Context, code int, reason string, spread time.Duration) {
	clients := h.snapshot(nil)
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for i, c := range clients {
		if spread > 0 && ctx.Err() == nil {
			// The first close waits one slot too: readiness has already
			// turned off, and load balancers get that slot to notice.
			due := start.Add(spread * time.Duration(i+1) / time.Duration(len(clients)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
			}
		}
		c.Conn.Close(code, reason)
	}
}

// AbortAll tears down every client's socket at once (last resort of shutdown).
func (h *Hub) AbortAll() {
	for _, c := range h.snapshot(nil) {
		c.Conn.Abort()
	}
}
