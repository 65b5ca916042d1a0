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

// ClientFrame is one frame from a client: [action, details],
// [action, details, ref] or [action, details, ref|null, id].
type ClientFrame struct {
	Action  string
	Details json.RawMessage // never nil: absent details are null
	Ref     json.RawMessage // nil when absent or null; else a JSON string or integer
	ID      string          // "" when absent or null; else a message id (ValidateMsgID, §8)
}

// ParseClientFrame decodes and validates a client frame. Its error says why the
// frame was refused, in words fit to send back to the client. Details and Ref
// may share data's memory.
func ParseClientFrame(data []byte) (ClientFrame, error) {
	// On the edge this never fails: its reader (services/edge/internal/wsconn)
	// closes with 1007 on a text message that is not UTF-8, and binary ones
	// are refused. It stays so that the parser is safe whoever calls it: the
	// scanner assumes valid UTF-8 (scan.go), and details and ref go back to
	// clients verbatim, where a browser fails the whole connection on invalid UTF-8.
	if !utf8.Valid(data) {
		return ClientFrame{}, fmt.Errorf("%w: not valid UTF-8", ErrBadFrame)
	}
	if f, ok := parseClientFrameFast(data); ok {
		return f, nil
	}
	return parseClientFrameJSON(data)
}

// parseClientFrameJSON is ParseClientFrame by encoding/json, for any input.
func parseClientFrameJSON(data []byte) (ClientFrame, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil {
		return ClientFrame{}, fmt.Errorf("%w: not a JSON array", ErrBadFrame)
	}
	if len(parts) < 1 || len(parts) > 4 {
		return ClientFrame{}, fmt.Errorf("%w: want [action, details], [action, details, ref] or [action, details, ref, id], got %d elements", ErrBadFrame, len(parts))
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
	if len(parts) > 3 && string(parts[3]) != "null" {
		if err := json.Unmarshal(parts[3], &f.ID); err != nil {
			return ClientFrame{}, fmt.Errorf("%w: id is not a string", ErrBadFrame)
		}
		if err := ValidateMsgID(f.ID); err != nil {
			return ClientFrame{}, fmt.Errorf("%w: %w", ErrBadFrame, err)
		}
	}
	return f, nil
}

// parseClientFrameFast is ParseClientFrame for the usual frame: a plain
// action, no deeply nested details. It gives up (ok false) on anything else,
// valid or not, and ParseClientFrame's encoding/json path decides. Details
// and ref are slices of data: the edge's reader hands over each frame's
// payload as the caller's own, so copying them again would be waste.
func parseClientFrameFast(data []byte) (f ClientFrame, ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return f, false
	}
	i = skipSpace(data, i+1)
	if i >= len(data) || data[i] != '"' {
		return f, false
	}
	end, escaped := scanString(data, i)
	if end < 0 || escaped {
		return f, false
	}
	action := data[i+1 : end-1]
	if !validToken(action, MaxActionLen, actionChars) {
		return f, false
	}
	var details, ref, id []byte
	// elem scans the array element after the comma at data[i].
	elem := func() []byte {
		start := skipSpace(data, i+1)
		if end := scanValue(data, start, 0); end > 0 {
			i = skipSpace(data, end)
			return data[start:end]
		}
		i = len(data)
		return nil
	}
	if i = skipSpace(data, end); i < len(data) && data[i] == ',' {
		details = elem()
		if i < len(data) && data[i] == ',' {
			ref = elem()
			if i < len(data) && data[i] == ',' {
				id = elem()
			}
		}
	}
	if i >= len(data) || data[i] != ']' || skipSpace(data, i+1) != len(data) {
		return f, false
	}
	if ValidateRef(ref) != nil {
		return f, false
	}
	if string(ref) == "null" {
		ref = nil
	}
	if id != nil && string(id) != "null" {
		// A plain string of id characters; anything else, valid or not, is
		// left to the encoding/json path and its reason.
		if len(id) < 2 || id[0] != '"' || !validToken(id[1:len(id)-1], MaxMsgIDLen, msgIDChars) {
			return f, false
		}
		f.ID = string(id[1 : len(id)-1])
	}
	f.Action, f.Details, f.Ref = string(action), null, ref
	if details != nil {
		f.Details = details
	}
	return f, true
}

// ValidateRef reports whether ref is a JSON string of at most MaxRefLen
// characters or a JSON integer. A nil or null ref is valid (absent).
func ValidateRef(ref json.RawMessage) error {
	ref = bytes.TrimSpace(ref)
	if len(ref) == 0 || string(ref) == "null" {
		return nil
	}
	if ref[0] == '"' {
		if end, escaped := scanString(ref, 0); end == len(ref) && !escaped && utf8.Valid(ref) {
			if utf8.RuneCount(ref)-2 > MaxRefLen {
				return fmt.Errorf("ref is longer than %d characters", MaxRefLen)
			}
			return nil
		}
		var s string
		if err := json.Unmarshal(ref, &s); err != nil {
			return errors.New("ref is not a valid JSON string")
		}
		if utf8.RuneCountInString(s) > MaxRefLen {
			return fmt.Errorf("ref is longer than %d characters", MaxRefLen)
		}
		return nil
	}
	// ParseInt alone would take "+1" and "007", which are not JSON.
	if scanNumber(ref, 0) != len(ref) || bytes.ContainsAny(ref, ".eE") {
		return errors.New("ref must be a string or an integer")
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
