package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Properties a Filter can match besides the keys of a connection's props.
const (
	PropLanguage  = "language"
	PropIP        = "ip"
	PropUserAgent = "user_agent"
	PropOrigin    = "origin"
)

// ErrBadOutbound is wrapped by every error of DecodeOutbound.
var ErrBadOutbound = errors.New("wire: invalid outbound message")

// Outbound is what anyone publishes on <prefix>.send.* to reach clients.
type Outbound struct {
	Action  string          `json:"action"`
	Details json.RawMessage `json:"details,omitempty"`
	Ref     json.RawMessage `json:"ref,omitempty"`
	Filter  *Filter         `json:"filter,omitempty"`
}

// Filter selects the connections whose property equals Value.
type Filter struct {
	Property string `json:"property"`
	Value    string `json:"value"`
}

// DecodeOutbound decodes and validates an outbound message. A null ref is
// returned as absent. Details and Ref may share data's memory.
func DecodeOutbound(data []byte) (Outbound, error) {
	// Details go to clients verbatim in text frames: one publish with invalid
	// UTF-8 to <prefix>.send.all would make every browser fail its connection.
	if !utf8.Valid(data) {
		return Outbound{}, fmt.Errorf("%w: not valid UTF-8", ErrBadOutbound)
	}
	if m, ok := decodeOutboundFast(data); ok {
		return m, nil
	}
	return decodeOutboundJSON(data)
}

// Fields of Outbound, for fieldSet.
const (
	outAction = iota
	outDetails
	outRef
	outFilter
)

// decodeOutboundFast is DecodeOutbound for the usual message: plain keys
// and action, no filter. It gives up (ok false) on anything else, valid or
// not, and encoding/json decides.
func decodeOutboundFast(data []byte) (m Outbound, ok bool) {
	var seen fieldSet
	ok = eachMember(data, func(key, value []byte) bool {
		switch {
		case asciiFold(key, "action"):
			action, isString := plainString(value)
			m.Action = action
			return isString && seen.first(outAction)
		case asciiFold(key, "details"):
			m.Details = value
			return seen.first(outDetails)
		case asciiFold(key, "ref"):
			m.Ref = value
			return seen.first(outRef)
		case asciiFold(key, "filter"):
			return string(value) == "null" && seen.first(outFilter)
		}
		return true // encoding/json ignores unknown keys too
	})
	if !ok || ValidateOutboundAction(m.Action) != nil || ValidateRef(m.Ref) != nil {
		return Outbound{}, false
	}
	if string(m.Ref) == "null" {
		m.Ref = nil
	}
	return m, true
}

// decodeOutboundJSON is DecodeOutbound by encoding/json, for any input.
func decodeOutboundJSON(data []byte) (Outbound, error) {
	var m Outbound
	if err := json.Unmarshal(data, &m); err != nil {
		return Outbound{}, fmt.Errorf("%w: %w", ErrBadOutbound, err)
	}
	if err := ValidateOutboundAction(m.Action); err != nil {
		return Outbound{}, fmt.Errorf("%w: %w", ErrBadOutbound, err)
	}
	if err := ValidateRef(m.Ref); err != nil {
		return Outbound{}, fmt.Errorf("%w: %w", ErrBadOutbound, err)
	}
	if string(m.Ref) == "null" {
		m.Ref = nil
	}
	if m.Filter != nil && m.Filter.Property == "" {
		return Outbound{}, fmt.Errorf("%w: filter.property is empty", ErrBadOutbound)
	}
	return m, nil
}

// ValidateOutboundAction is ValidateAction, except that an error response of
// a 128-character action ("<action>:error") is accepted too, and that the
// reserved actions (DESIGN.md §2) are refused: only the edge sends Client/
// and Server/ frames, so that no publisher can forge a kick, an ack or a
// recovery.
func ValidateOutboundAction(action string) error {
	if strings.HasPrefix(action, ReservedClient) || strings.HasPrefix(action, ReservedServer) {
		return fmt.Errorf("%w: %q is reserved: only the edge sends %s and %s actions", ErrBadAction, action, ReservedClient, ReservedServer)
	}
	if base, ok := strings.CutSuffix(action, ErrorSuffix); ok && len(action) > MaxActionLen {
		return ValidateAction(base)
	}
	return ValidateAction(action)
}

// AppendOutbound appends the JSON encoding of m to dst: what json.Marshal
// gives, without its reflection. m.Details and m.Ref must be valid JSON;
// empty ones are left out.
func AppendOutbound(dst []byte, m *Outbound) []byte {
	dst = append(dst, `{"action":`...)
	dst = appendString(dst, m.Action)
	if len(m.Details) > 0 {
		dst = append(dst, `,"details":`...)
		dst = append(dst, m.Details...)
	}
	if len(m.Ref) > 0 {
		dst = append(dst, `,"ref":`...)
		dst = append(dst, m.Ref...)
	}
	if m.Filter != nil {
		dst = append(dst, `,"filter":{"property":`...)
		dst = appendString(dst, m.Filter.Property)
		dst = append(dst, `,"value":`...)
		dst = appendString(dst, m.Filter.Value)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}
