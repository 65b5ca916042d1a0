package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// System actions (DESIGN.md §2). Actions starting with ReservedClient or
// ReservedServer are reserved for them.
const (
	ActionAuthentication = "Client/authentication"
	ActionDisconnection  = "Client/disconnection"
	ActionPing           = "Client/ping"
	ActionPong           = "Server/pong"
	ActionClose          = "Server/close"
	ActionClientError    = "Client/error"

	ReservedClient = "Client/"
	ReservedServer = "Server/"

	// ErrorSuffix ends the action of an error response.
	ErrorSuffix = ":error"
)

// ErrBadFrame is wrapped by every error of ParseClientFrame.
var ErrBadFrame = errors.New("wire: invalid frame")

var null = json.RawMessage("null")

// ClientFrame is one frame from a client: [action, details] or [action, details, ref].
type ClientFrame struct {
	Action  string
	Details json.RawMessage // never nil: absent details are null
	Ref     json.RawMessage // nil when absent or null; else a JSON string or integer
}

// ParseClientFrame decodes and validates a client frame. Its error says why the
// frame was refused, in words fit to send back to the client.
func ParseClientFrame(data []byte) (ClientFrame, error) {
	// The WebSocket library does not check text frames, and details and ref
	// go back to clients verbatim: a browser fails the whole connection on
	// invalid UTF-8, so it must not get past here.
	if !utf8.Valid(data) {
		return ClientFrame{}, fmt.Errorf("%w: not valid UTF-8", ErrBadFrame)
	}
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: not a JSON array", ErrBadFrame)
	}
	if len(parts) < 1 || len(parts) > 3 {
		return ClientFrame{}, fmt.Errorf("%w: want [action, details] or [action, details, ref], got %d elements", ErrBadFrame, len(parts))
	}
	var f ClientFrame
	if err := json.Unmarshal(parts[0], &f.Action); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: action is not a string", ErrBadFrame)
	}
	if err := ValidateAction(f.Action); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: %w", ErrBadFrame, err)
	}
	f.Details = null
	if len(parts) > 1 {
		f.Details = parts[1]
	}
	if len(parts) > 2 {
		if err := ValidateRef(parts[2]); err != nil {
			return ClientFrame{}, fmt.Errorf("%w: %w", ErrBadFrame, err)
		}
		if string(parts[2]) != "null" { // a null ref is absent: the schemas have no null ref
			f.Ref = parts[2]
		}
	}
	return f, nil
}

// ValidateRef reports whether ref is a JSON string of at most MaxRefLen
// characters or a JSON integer. A nil or null ref is valid (absent).
func ValidateRef(ref json.RawMessage) error {
	ref = bytes.TrimSpace(ref)
	if len(ref) == 0 || string(ref) == "null" {
		return nil
	}
	if ref[0] == '"' {
		var s string
		if err := json.Unmarshal(ref, &s); err != nil {
			return errors.New("ref is not a valid JSON string")
		}
		if utf8.RuneCountInString(s) > MaxRefLen {
			return fmt.Errorf("ref is longer than %d characters", MaxRefLen)
		}
		return nil
	}
	if _, err := strconv.ParseInt(string(ref), 10, 64); err != nil {
		return errors.New("ref must be a string or an integer")
	}
	return nil
}

// AppendServerFrame appends the frame [action, details] or, when ref is set,
// [action, details, ref] to dst. action must be valid (see ValidateAction) and
// details and ref valid JSON; empty details become null.
func AppendServerFrame(dst []byte, action string, details, ref json.RawMessage) []byte {
	dst = append(dst, `["`...)
	dst = append(dst, action...)
	dst = append(dst, `",`...)
	if len(details) == 0 {
		details = null
	}
	dst = append(dst, details...)
	// A null ref is absent, as ValidateRef has it (white space included).
	if ref = bytes.TrimSpace(ref); len(ref) > 0 && string(ref) != "null" {
		dst = append(dst, ',')
		dst = append(dst, ref...)
	}
	return append(dst, ']')
}

// ServerFrame returns the encoded frame for action with details marshalled
// from v; it is meant for the edge's own replies, not for the hot path.
func ServerFrame(action string, v any) []byte {
	details, err := json.Marshal(v)
	if err != nil {
		details = null
	}
	return AppendServerFrame(nil, action, details, nil)
}
