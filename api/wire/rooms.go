package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Joined groups (DESIGN.md §9): <prefix>.ctl.join.<target> and
// <prefix>.ctl.leave.<target> carry a Membership; a request is answered with
// a ControlAnswer.

// Kinds of join and leave targets: the subject's token after join/leave.
const (
	KindUser    = "user"
	KindSession = "session"
	KindConn    = "conn"
)

// MaxMembershipGroups is how many groups one join or leave may name.
const MaxMembershipGroups = 100

// Membership is the payload of a join or leave: the groups to add or remove.
type Membership struct {
	Groups []string `json:"groups"`
}

// ControlAnswer answers a join or leave request: OK once the change is in
// force, or Error saying why nothing changed (or why it is not confirmed).
type ControlAnswer struct {
	OK    bool          `json:"ok,omitempty"`
	Error *ControlError `json:"error,omitempty"`
}

// ControlError is the error of a ControlAnswer; Code is an HTTP status.
type ControlError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// ErrBadMembership is wrapped by every refusal of DecodeMembership.
var ErrBadMembership = errors.New("wire: invalid membership")

// DecodeMembership reads and checks a join or leave payload: a JSON object
// with "groups", 1–MaxMembershipGroups valid ids, and nothing else.
// Duplicates are removed, order kept.
func DecodeMembership(data []byte) (Membership, error) {
	var m Membership
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Membership{}, fmt.Errorf(`%w: want {"groups": ["<group>", ...]}: %w`, ErrBadMembership, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Membership{}, fmt.Errorf("%w: data after the JSON object", ErrBadMembership)
	}
	if len(m.Groups) == 0 || len(m.Groups) > MaxMembershipGroups {
		return Membership{}, fmt.Errorf("%w: groups must list 1 to %d groups", ErrBadMembership, MaxMembershipGroups)
	}
	seen := make(map[string]struct{}, len(m.Groups))
	groups := m.Groups[:0]
	for _, g := range m.Groups {
		if err := ValidateID(g); err != nil {
			return Membership{}, fmt.Errorf("%w: group %q: %w", ErrBadMembership, g, err)
		}
		if _, dup := seen[g]; !dup {
			seen[g] = struct{}{}
			groups = append(groups, g)
		}
	}
	m.Groups = groups
	return m, nil
}

// Join is <prefix>.ctl.join.<kind>.<id>; for KindConn, id is "<edge>.<conn>".
func (s Subjects) Join(kind, id string) string { return s.Prefix + ".ctl.join." + kind + "." + id }

// Leave is <prefix>.ctl.leave.<kind>.<id>, as Join.
func (s Subjects) Leave(kind, id string) string { return s.Prefix + ".ctl.leave." + kind + "." + id }

// JoinAll is <prefix>.ctl.join.>, every join.
func (s Subjects) JoinAll() string { return s.Prefix + ".ctl.join.>" }

// LeaveAll is <prefix>.ctl.leave.>, every leave.
func (s Subjects) LeaveAll() string { return s.Prefix + ".ctl.leave.>" }

// RoomsApply is <prefix>.rooms.apply, internal to the edges: the edge that
// took a join or leave asks every edge to put it in force there.
func (s Subjects) RoomsApply() string { return s.Prefix + ".rooms.apply" }

// RoomsEdges is <prefix>.rooms.edges, internal to the edges: each announces
// itself there, so that a join knows whose confirmation to wait for.
func (s Subjects) RoomsEdges() string { return s.Prefix + ".rooms.edges" }
