package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
)

// A join or leave is for a user (every connection, now and later, on every
// edge), a session, or one connection: a Target built with UserTarget,
// SessionTarget or ConnectionTarget.

// UserTarget is every connection of user.
func UserTarget(user string) Target { return Target{Kind: TargetUser, ID: user} }

// SessionTarget is every connection of session.
func SessionTarget(session string) Target { return Target{Kind: TargetSession, ID: session} }

// ConnectionTarget is one connection, "<edge>.<conn>" as in
// Message.Connection; its joins end with it.
func ConnectionTarget(connection string) Target { return Target{Kind: TargetConn, ID: connection} }

// String is the target as in the subject: "user.42".
func (t Target) String() string { return t.Kind + "." + t.ID }

// ErrNotAnswered: no edge answered a join or leave (none runs, NATS is down,
// or ctx ended first); whether it took effect is unknown.
var ErrNotAnswered = errors.New("dispatcher: join or leave not answered")

// MembershipError is an edge's refusal of a join or leave: Code 400 for a
// bad group name, 404 for a connection that does not exist, 503 when the
// change could not be confirmed on every edge in time (a stored membership
// stays stored: retry).
type MembershipError struct {
	Code    int
	Message string
}

func (e *MembershipError) Error() string {
	return fmt.Sprintf("dispatcher: membership refused: %d %s", e.Code, e.Message)
}

// defaultMembershipTimeout bounds a join or leave whose ctx has no deadline.
const defaultMembershipTimeout = 5 * time.Second

// Join puts target into groups (DESIGN.md §9) and returns once the edges
// have it in force: a message sent to one of the groups after Join returns
// reaches every connection of the target that was open when it was called.
// With WS_PRESENCE on, user and session joins are stored and apply to later
// connections too, on every edge, until Leave. Errors: ErrInvalidID for a bad
// target or group (nothing is sent), *MembershipError for a refusal,
// ErrNotAnswered when no edge answered.
func (s *Sender) Join(ctx context.Context, target Target, groups ...string) error {
	return s.membership(ctx, true, target, groups)
}

// Leave takes target out of groups, as Join puts it in. Groups that the
// connections' tokens grant stay: only joined memberships can be left.
func (s *Sender) Leave(ctx context.Context, target Target, groups ...string) error {
	return s.membership(ctx, false, target, groups)
}

func (s *Sender) membership(ctx context.Context, join bool, target Target, groups []string) error {
	var err error
	switch target.Kind {
	case wire.KindUser, wire.KindSession:
		err = checkID(target.Kind, target.ID)
	case wire.KindConn:
		err = checkConnection(target.ID)
	default:
		err = fmt.Errorf("%w: target: use UserTarget, SessionTarget or ConnectionTarget", ErrInvalidID)
	}
	if err != nil {
		return err
	}
	if len(groups) == 0 || len(groups) > wire.MaxMembershipGroups {
		return fmt.Errorf("%w: groups: want 1 to %d", ErrInvalidID, wire.MaxMembershipGroups)
	}
	for _, g := range groups {
		if err := checkID("group", g); err != nil {
			return err
		}
	}
	subject := s.subjects.Join(target.Kind, target.ID)
	if !join {
		subject = s.subjects.Leave(target.Kind, target.ID)
	}
	data, _ := json.Marshal(wire.Membership{Groups: groups})
	m, err := s.request(ctx, subject, data, defaultMembershipTimeout, ErrNotAnswered, "no edge is running")
	if err != nil {
		return err
	}
	var a wire.ControlAnswer
	if err := json.Unmarshal(m.Data, &a); err != nil {
		return fmt.Errorf("%w: %s: answer is not JSON: %w", ErrNotAnswered, subject, err)
	}
	if a.Error != nil {
		return &MembershipError{Code: a.Error.Code, Message: a.Error.Message}
	}
	if !a.OK {
		return fmt.Errorf("%w: %s: answer without ok", ErrNotAnswered, subject)
	}
	return nil
}

// request sends a NATS request, bounded by timeout when ctx has no
// deadline; a failure is notAnswered, with noResponders as the reason when
// nobody listens on subject.
func (s *Sender) request(ctx context.Context, subject string, data []byte, timeout time.Duration, notAnswered error, noResponders string) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	m, err := s.nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, fmt.Errorf("%w: %s: %s", notAnswered, subject, noResponders)
		}
		return nil, fmt.Errorf("%w: %s: %w", notAnswered, subject, err)
	}
	return m, nil
}
