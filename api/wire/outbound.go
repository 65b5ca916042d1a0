package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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

// DecodeOutbound decodes and validates an outbound message: its action
// (ValidateOutboundAction), its ref (ValidateRef), its filter, and the
// details of an error response (ValidateOutboundDetails). A null ref is
// returned as absent. Details and Ref may share data's memory.
func DecodeOutbound(data []byte) (Outbound, error) {
	// Details go to clients verbatim in text frames: one publish with invalid
	// UTF-8 to <prefix>.send.all would make every browser fail its connection.
	if !utf8.Valid(data) {
		return Outbound{}, fmt.Errorf("%w: not valid UTF-8", ErrBadOutbound)
	}
	m, ok := decodeOutboundFast(data)
	if !ok {
		var err error
		if m, err = decodeOutboundJSON(data); err != nil {
			return Outbound{}, err
		}
	}
	// The edge forwards details verbatim: an error response whose details
	// are not [code, message] would reach clients as a frame that breaks the
	// server-frame schema (DESIGN.md §2).
	if err := ValidateOutboundDetails(m.Action, m.Details); err != nil {
		return Outbound{}, fmt.Errorf("%w: %w", ErrBadOutbound, err)
	}
	return m, nil
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
// recovery. An error response's details are checked by
// ValidateOutboundDetails.
func ValidateOutboundAction(action string) error {
	if strings.HasPrefix(action, ReservedClient) || strings.HasPrefix(action, ReservedServer) {
		return fmt.Errorf("%w: %q is reserved: only the edge sends %s and %s actions", ErrBadAction, action, ReservedClient, ReservedServer)
	}
	if base, ok := strings.CutSuffix(action, ErrorSuffix); ok && len(action) > MaxActionLen {
		return ValidateAction(base)
	}
	return ValidateAction(action)
}

// ErrBadErrorDetails is wrapped by the errors of ValidateOutboundDetails.
var ErrBadErrorDetails = errors.New("wire: invalid error details")

// ValidateOutboundDetails checks the details of an outbound message with
// action: an error response (an action ending in ErrorSuffix) must carry
// [code, message], code an integer HTTP error status (400–599) and message
// a string (DESIGN.md §2; defs.json errorDetails). Any other action takes
// any details. Absent (nil) or null details of an error response are
// refused. Publishers (the SDK's Sender, the HTTP send API) call it with
// ValidateOutboundAction; DecodeOutbound, and so the edge, applies it too.
func ValidateOutboundDetails(action string, details json.RawMessage) error {
	if !strings.HasSuffix(action, ErrorSuffix) {
		return nil
	}
	if reason := errorDetailsProblem(details); reason != "" {
		return fmt.Errorf("%w: %q is an error response: its details must be [code, message] (an integer from 400 to 599 and a string): %s",
			ErrBadErrorDetails, action, reason)
	}
	return nil
}

// errorDetailsProblem says what keeps details from being [code, message],
// or "" when they are.
func errorDetailsProblem(details json.RawMessage) string {
	details = bytes.TrimSpace(details)
	if len(details) == 0 || string(details) == "null" {
		return "they are absent"
	}
	var parts []json.RawMessage
	if details[0] != '[' || json.Unmarshal(details, &parts) != nil {
		return "they are not an array"
	}
	if len(parts) != 2 {
		return fmt.Sprintf("the array has %d elements, not 2", len(parts))
	}
	// Only a plain JSON integer: ParseInt alone would take "+400" and "0400".
	code := bytes.TrimSpace(parts[0])
	if len(code) == 0 || code[0] != '-' && (code[0] < '0' || code[0] > '9') ||
		scanNumber(code, 0) != len(code) || bytes.ContainsAny(code, ".eE") {
		return "the code is not an integer"
	}
	if n, err := strconv.Atoi(string(code)); err != nil || !ValidErrorCode(n) {
		return "the code is not from 400 to 599"
	}
	if msg := bytes.TrimSpace(parts[1]); len(msg) == 0 || msg[0] != '"' {
		return "the message is not a string"
	}
	return ""
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
