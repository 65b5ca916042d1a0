package sendapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
)

// Paths of the joined groups (DESIGN.md §9).
const (
	PathJoin  = "/v1/join"
	PathLeave = "/v1/leave"
)

// Membership puts connections into groups or takes them out: the body of
// POST /v1/join and POST /v1/leave, that of /v1/close plus "groups".
type Membership struct {
	Target string   `json:"target"`
	ID     ID       `json:"id"`
	Groups []string `json:"groups"`
}

// Validate checks m and says what is wrong in words fit for the caller.
func (m *Membership) Validate() error {
	c := Close{Target: m.Target, ID: m.ID}
	if err := c.Validate(); err != nil {
		return err
	}
	if len(m.Groups) == 0 || len(m.Groups) > wire.MaxMembershipGroups {
		return fmt.Errorf(`"groups" must list 1 to %d groups`, wire.MaxMembershipGroups)
	}
	for _, g := range m.Groups {
		if err := wire.ValidateID(g); err != nil {
			return fmt.Errorf("group %q: %w", g, err)
		}
	}
	return nil
}

func (m *Membership) target() dispatcher.Target {
	switch m.Target {
	case TargetSession:
		return dispatcher.SessionTarget(string(m.ID))
	case TargetConn:
		return dispatcher.ConnectionTarget(string(m.ID))
	}
	return dispatcher.UserTarget(string(m.ID))
}

func (a *API) serveJoin(w http.ResponseWriter, r *http.Request)  { a.serveMembership(w, r, true) }
func (a *API) serveLeave(w http.ResponseWriter, r *http.Request) { a.serveMembership(w, r, false) }

// serveMembership answers 200 {"status": "ok"} once the edges have the change in
// force, the edges' refusal with its code, or 503 when NATS is down or the
// change is not confirmed.
func (a *API) serveMembership(w http.ResponseWriter, r *http.Request, join bool) {
	var m Membership
	if !a.decode(w, r, &m, m.Validate) {
		return
	}
	if !a.connected() {
		a.fail(w, r, http.StatusServiceUnavailable, "NATS is not connected; nothing was changed")
		return
	}
	do := a.sender.Join
	if !join {
		do = a.sender.Leave
	}
	err := do(context.WithoutCancel(r.Context()), m.target(), m.Groups...)
	var refused *dispatcher.MembershipError
	switch {
	case err == nil:
		a.write(w, r, http.StatusOK, map[string]string{"status": "ok"})
	case errors.As(err, &refused):
		code := refused.Code
		if code < 400 || code > 599 {
			code = http.StatusBadGateway
		}
		a.fail(w, r, code, refused.Message)
	case errors.Is(err, dispatcher.ErrNotAnswered):
		a.log.WarnContext(r.Context(), "api membership not answered", "target", m.Target, "err", err)
		a.fail(w, r, http.StatusServiceUnavailable, "no edge confirmed the change; retry")
	default:
		a.log.ErrorContext(r.Context(), "api membership failed", "target", m.Target, "err", err)
		a.fail(w, r, http.StatusInternalServerError, "internal error")
	}
}
