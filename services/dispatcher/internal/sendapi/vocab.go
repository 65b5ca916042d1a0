// Package sendapi is the dispatcher's HTTP send API (DESIGN.md §5), for
// applications that do not speak NATS: POST /v1/send and POST /v1/close. It
// also owns the send vocabulary ({"target", "id", "action", ...}) that the
// HTTP routes' backends answer with, so that both parse, validate and execute
// it with the same code, through the SDK's Sender.
package sendapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher"
)

// Targets of a Send (DESIGN.md §4); the seed's SEND_TO_* constants map to
// them. Close takes TargetUser, TargetSession and TargetConn.
const (
	TargetAll     = "all"     // every connection (SEND_TO_ALL)
	TargetUsers   = "users"   // every authenticated connection (SEND_TO_REGISTERED_USERS)
	TargetUser    = "user"    // every connection of id, or of each of ids (SEND_TO_SPECIFIC_USERS)
	TargetGroup   = "group"   // every connection whose user is in group id (SEND_TO_USERS_GROUP)
	TargetSession = "session" // every connection of session id
	TargetConn    = "conn"    // one connection, id "<edge>.<conn>"
	TargetFilter  = "filter"  // connections whose property equals a value (SEND_TO_FILTER)
)

// MaxIDs bounds the ids of one Send, so one request cannot fan out without
// limit; more users take several requests.
const MaxIDs = 1000

const (
	sendTargets  = "all, users, user, group, session, conn, filter"
	closeTargets = "user, session, conn"
)

// ID is a user, group, session or connection id. It decodes from a JSON
// string or integer, since applications (the seed's PHP among them) often
// hold user ids as numbers.
type ID string

// UnmarshalJSON accepts a JSON string or integer.
func (id *ID) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err == nil {
		*id = ID(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(data, &n); err == nil {
		if _, err := n.Int64(); err == nil {
			*id = ID(n.String())
			return nil
		}
	}
	return &json.UnmarshalTypeError{Value: string(data), Type: reflect.TypeFor[ID]()}
}

// Filter selects connections by one property, as wire.Filter does; Value is
// a pointer so that a missing value is told from an empty one.
type Filter struct {
	Property string  `json:"property"`
	Value    *string `json:"value"`
}

// Send is one message to clients: the body of POST /v1/send and one element
// of a route backend's "sends". Decode it with Decode, then Validate it
// before Do.
type Send struct {
	Target  string          `json:"target"`
	ID      ID              `json:"id,omitempty"`
	IDs     []ID            `json:"ids,omitempty"` // target user only, instead of id
	Filter  *Filter         `json:"filter,omitempty"`
	Action  string          `json:"action"`
	Details json.RawMessage `json:"details,omitempty"` // absent = null
	Ref     json.RawMessage `json:"ref,omitempty"`     // target conn only
}

// Validate checks s and says what is wrong in words fit for the caller.
func (s *Send) Validate() error {
	switch s.Target {
	case "":
		return fmt.Errorf(`"target" is required: one of %s`, sendTargets)
	case TargetAll, TargetUsers, TargetUser, TargetGroup, TargetSession, TargetConn, TargetFilter:
	default:
		return fmt.Errorf(`unknown target %q: want one of %s`, s.Target, sendTargets)
	}
	if err := s.validateIDs(); err != nil {
		return err
	}
	switch {
	case s.Target == TargetFilter && s.Filter == nil:
		return errors.New(`target "filter" needs "filter": {"property": "...", "value": "..."}`)
	case s.Target != TargetFilter && s.Filter != nil:
		return errors.New(`"filter" is only for target "filter"`)
	case s.Filter != nil && s.Filter.Property == "":
		return errors.New(`"filter.property" is required: language, ip, user_agent, origin or a props key`)
	case s.Filter != nil && s.Filter.Value == nil:
		return errors.New(`"filter.value" is required`)
	}
	if s.Action == "" {
		return errors.New(`"action" is required`)
	}
	if err := wire.ValidateOutboundAction(s.Action); err != nil {
		return fmt.Errorf(`"action" is invalid: %s`, reason(err, wire.ErrBadAction))
	}
	if err := wire.ValidateOutboundDetails(s.Action, s.Details); err != nil {
		return fmt.Errorf(`"details" are invalid: %s`, reason(err, wire.ErrBadErrorDetails))
	}
	if ref := bytes.TrimSpace(s.Ref); len(ref) > 0 && string(ref) != "null" {
		if s.Target != TargetConn {
			return errors.New(`"ref" is only for target "conn" (a reply to one connection)`)
		}
		if err := wire.ValidateRef(ref); err != nil {
			return fmt.Errorf(`"ref" is invalid: %w`, err)
		}
	}
	return nil
}

// validateIDs checks id and ids against the target.
func (s *Send) validateIDs() error {
	if s.IDs != nil {
		switch {
		case s.Target != TargetUser:
			return errors.New(`"ids" is only for target "user"`)
		case s.ID != "":
			return errors.New(`give "id" or "ids", not both`)
		case len(s.IDs) == 0:
			return errors.New(`"ids" is empty`)
		case len(s.IDs) > MaxIDs:
			return fmt.Errorf(`"ids" has %d entries; at most %d`, len(s.IDs), MaxIDs)
		}
		for i, id := range s.IDs {
			if err := checkID(fmt.Sprintf("ids[%d]", i), id); err != nil {
				return err
			}
		}
		return nil
	}
	switch s.Target {
	case TargetAll, TargetUsers, TargetFilter:
		if s.ID != "" {
			return fmt.Errorf(`target %q takes no "id"`, s.Target)
		}
		return nil
	case TargetUser:
		if s.ID == "" {
			return errors.New(`target "user" needs "id" (or "ids")`)
		}
	case TargetConn:
		return checkConnection(s.Target, s.ID)
	default:
		if s.ID == "" {
			return fmt.Errorf(`target %q needs "id"`, s.Target)
		}
	}
	return checkID("id", s.ID)
}

// Do sends s, which Validate accepted, through snd. Its errors wrap the SDK's
// (dispatcher.ErrPublish when NATS refused).
func (s *Send) Do(ctx context.Context, snd *dispatcher.Sender) error {
	_, err := s.Deliver(ctx, snd)
	return err
}

// Deliver is Do returning the history sequence that stored the message
// (the last one for several ids; 0 without history or for a connection).
func (s *Send) Deliver(ctx context.Context, snd *dispatcher.Sender) (uint64, error) {
	var details any // nil: absent, which clients read as null
	if len(s.Details) > 0 {
		details = s.Details
	}
	switch s.Target {
	case TargetAll, TargetUsers, TargetGroup, TargetSession:
		return snd.Send(ctx, dispatcher.Target{Kind: s.Target, ID: string(s.ID)}, s.Action, details)
	case TargetUser:
		if s.IDs == nil {
			return snd.Send(ctx, dispatcher.Target{Kind: s.Target, ID: string(s.ID)}, s.Action, details)
		}
		var last uint64
		ids := uniqueIDs(s.IDs)
		for i, id := range ids {
			seq, err := snd.Send(ctx, dispatcher.Target{Kind: s.Target, ID: id}, s.Action, details)
			if err != nil {
				if i > 0 {
					err = &partialSend{sent: i, of: len(ids), err: err}
				}
				return last, err
			}
			last = seq
		}
		return last, nil
	case TargetConn:
		return 0, snd.ToConnection(ctx, string(s.ID), s.Action, details, s.Ref)
	case TargetFilter:
		f := wire.Filter{Property: s.Filter.Property, Value: *s.Filter.Value}
		return snd.Send(ctx, dispatcher.Target{Kind: s.Target, Filter: f}, s.Action, details)
	}
	return 0, fmt.Errorf("sendapi: unknown target %q", s.Target) // Validate was skipped
}

// Close closes connections: the body of POST /v1/close.
type Close struct {
	Target string `json:"target"`
	ID     ID     `json:"id"`
}

// Validate checks c and says what is wrong in words fit for the caller.
func (c *Close) Validate() error {
	switch c.Target {
	case "":
		return fmt.Errorf(`"target" is required: one of %s`, closeTargets)
	case TargetUser, TargetSession:
		if c.ID == "" {
			return fmt.Errorf(`target %q needs "id"`, c.Target)
		}
		return checkID("id", c.ID)
	case TargetConn:
		return checkConnection(c.Target, c.ID)
	}
	return fmt.Errorf(`target %q cannot be closed: want one of %s`, c.Target, closeTargets)
}

// Do closes the connections c names, which Validate accepted.
func (c *Close) Do(ctx context.Context, snd *dispatcher.Sender) error {
	switch c.Target {
	case TargetUser:
		return snd.CloseUser(ctx, string(c.ID))
	case TargetSession:
		return snd.CloseSession(ctx, string(c.ID))
	case TargetConn:
		return snd.CloseConnection(ctx, string(c.ID))
	}
	return fmt.Errorf("sendapi: unknown close target %q", c.Target) // Validate was skipped
}

// Decode decodes the single JSON object data into v, refusing unknown
// fields and trailing data. Its error says what is wrong in words fit for
// the caller; what names the document ("body", "response").
func Decode(data []byte, v any, what string) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return fmt.Errorf("%s is empty: want a JSON object", what)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describe(err, what)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s has data after its JSON object", what)
	}
	return nil
}

// describe turns an encoding/json error into a sentence about the document.
func describe(err error, what string) error {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("%s is not valid JSON: %s (at byte %d)", what, syntax, syntax.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%s is not valid JSON: it ends too early", what)
	case errors.As(err, &typ) && typ.Field == "":
		return fmt.Errorf("%s must be a JSON object", what)
	case errors.As(err, &typ):
		return fmt.Errorf("%q must be %s", typ.Field, kindOf(typ.Type))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("%s has an %s", what, strings.TrimPrefix(err.Error(), "json: "))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// kindOf names the JSON a Go type decodes from.
func kindOf(t reflect.Type) string {
	if t == reflect.TypeFor[ID]() {
		return "a string or an integer"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	}
	return "an object"
}

// checkID validates one id; field names it in the error.
func checkID(field string, id ID) error {
	if err := wire.ValidateID(string(id)); err != nil {
		return fmt.Errorf("%q is invalid: %s", field, reason(err, wire.ErrBadID))
	}
	return nil
}

// checkConnection validates the id of a conn target: "<edge>.<conn>", as the
// envelope's "connection" has it.
func checkConnection(target string, id ID) error {
	edge, conn, ok := strings.Cut(string(id), ".")
	if !ok {
		if id == "" {
			return fmt.Errorf(`target %q needs "id": the envelope's "connection", "<edge>.<conn>"`, target)
		}
		return errors.New(`"id" must be a connection "<edge>.<conn>", as the envelope's "connection" has it`)
	}
	if err := wire.ValidateID(edge); err != nil {
		return fmt.Errorf(`"id" is invalid: its <edge> part: %s`, reason(err, wire.ErrBadID))
	}
	if err := wire.ValidateID(conn); err != nil {
		return fmt.Errorf(`"id" is invalid: its <conn> part: %s`, reason(err, wire.ErrBadID))
	}
	return nil
}

// reason is err's text without the sentinel's "wire: invalid id: ".
func reason(err, sentinel error) string {
	return strings.TrimPrefix(err.Error(), sentinel.Error()+": ")
}

// uniqueIDs returns ids without repeats, in their first order, so that a
// user listed twice gets the message once.
// partialSend is the failure of a send to several ids after the first
// sent of them (in the request's order, repeats left out) went out.
type partialSend struct {
	sent, of int
	err      error
}

func (p *partialSend) Error() string {
	return fmt.Sprintf("%v (after %d of %d ids)", p.err, p.sent, p.of)
}

func (p *partialSend) Unwrap() error { return p.err }

// sentBefore says, for a caller that will retry, which ids a failed send
// reached: "" when it failed at the first.
func sentBefore(err error) string {
	var p *partialSend
	if !errors.As(err, &p) {
		return ""
	}
	return fmt.Sprintf(" (the first %d of its %d ids, in the request's order, were sent: retry only the others)", p.sent, p.of)
}

func uniqueIDs(ids []ID) []string {
	seen := make(map[ID]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, string(id))
		}
	}
	return out
}
