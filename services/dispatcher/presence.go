package dispatcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/wsgate/wsgate/api/wire"
)

// PresenceError is a dispatcher's refusal of a presence request: Code 503
// when presence is off (WS_PRESENCE=off) or its bucket cannot be read, 400
// for a bad request.
type PresenceError struct {
	Code    int
	Message string
}

func (e *PresenceError) Error() string {
	return fmt.Sprintf("dispatcher: presence refused: %d %s", e.Code, e.Message)
}

// ErrPresenceNotAnswered: no dispatcher answered a presence request (none
// runs, NATS is down, or ctx ended first).
var ErrPresenceNotAnswered = errors.New("dispatcher: presence request not answered")

// defaultPresenceTimeout bounds a presence request whose ctx has no deadline.
const defaultPresenceTimeout = 5 * time.Second

// UserPresence asks the dispatchers whether user is online, and on which
// connections (<prefix>.presence.user.<user>, DESIGN.md §9). Errors:
// ErrInvalidID for a bad user (nothing is sent), *PresenceError for a
// refusal, ErrPresenceNotAnswered when no dispatcher answered.
func (s *Sender) UserPresence(ctx context.Context, user string) (*wire.PresenceUserAnswer, error) {
	if err := checkID("user", user); err != nil {
		return nil, err
	}
	var a wire.PresenceUserAnswer
	if err := s.presence(ctx, s.subjects.PresenceUser(user), nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// GroupPresence asks the dispatchers who is in group
// (<prefix>.presence.group.<group>): the counts of users and connections, and
// at most limit members, sorted (limit 0: counts only). Errors as
// UserPresence's.
func (s *Sender) GroupPresence(ctx context.Context, group string, limit int) (*wire.PresenceGroupAnswer, error) {
	if err := checkID("group", group); err != nil {
		return nil, err
	}
	data, _ := json.Marshal(wire.PresenceGroupRequest{Limit: &limit})
	var a wire.PresenceGroupAnswer
	if err := s.presence(ctx, s.subjects.PresenceGroup(group), data, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// presence sends one presence request and decodes its answer into v.
func (s *Sender) presence(ctx context.Context, subject string, data []byte, v any) error {
	m, err := s.request(ctx, subject, data, defaultPresenceTimeout, ErrPresenceNotAnswered, "no dispatcher answers presence")
	if err != nil {
		return err
	}
	var refusal struct {
		Error *wire.PresenceErrorBody `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &refusal); err != nil {
		return fmt.Errorf("%w: %s: answer is not JSON: %w", ErrPresenceNotAnswered, subject, err)
	}
	if refusal.Error != nil {
		return &PresenceError{Code: refusal.Error.Code, Message: refusal.Error.Message}
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return fmt.Errorf("%w: %s: answer does not decode: %w", ErrPresenceNotAnswered, subject, err)
	}
	return nil
}
