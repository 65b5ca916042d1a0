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
// returned as absent.
func DecodeOutbound(data []byte) (Outbound, error) {
	// Details go to clients verbatim in text frames: one publish with invalid
	// UTF-8 to <prefix>.send.all would make every browser fail its connection.
	if !utf8.Valid(data) {
		return Outbound{}, fmt.Errorf("%w: not valid UTF-8", ErrBadOutbound)
	}
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
// a 128-character action ("<action>:error") is accepted too.
func ValidateOutboundAction(action string) error {
	if base, ok := strings.CutSuffix(action, ErrorSuffix); ok && len(action) > MaxActionLen {
		return ValidateAction(base)
	}
	return ValidateAction(action)
}
