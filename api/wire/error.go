package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Error codes used by wsgate itself. They are HTTP status codes, as the seed's
// compose_error used them; handlers may use any code from 400 to 599.
const (
	CodeBadRequest      = 400
	CodeUnauthorized    = 401
	CodeForbidden       = 403
	CodeNotFound        = 404
	CodeTooLarge        = 413
	CodeTooManyRequests = 429
	CodeInternal        = 500
	CodeUnavailable     = 503
)

// ValidErrorCode reports whether code may be an error response's: an HTTP
// error status, 400 to 599.
func ValidErrorCode(code int) bool { return code >= 400 && code <= 599 }

// Error is the details of an error response: [code, message] on the wire.
type Error struct {
	Code    int
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

// MarshalJSON encodes the error as [code, message].
func (e Error) MarshalJSON() ([]byte, error) {
	return json.Marshal([2]any{e.Code, e.Message})
}

// UnmarshalJSON decodes [code, message].
func (e *Error) UnmarshalJSON(data []byte) error {
	var parts []json.RawMessage
	if err := json.Unmarshal(data, &parts); err != nil || len(parts) != 2 {
		return errors.New("wire: error details must be [code, message]")
	}
	if err := json.Unmarshal(parts[0], &e.Code); err != nil {
		return fmt.Errorf("wire: error code: %w", err)
	}
	if err := json.Unmarshal(parts[1], &e.Message); err != nil {
		return fmt.Errorf("wire: error message: %w", err)
	}
	return nil
}

// ErrorAction returns the error response action of action: "<action>:error".
func ErrorAction(action string) string {
	if strings.HasSuffix(action, ErrorSuffix) {
		return action
	}
	return action + ErrorSuffix
}

// ErrorFrame returns the encoded frame [action, [code, message]].
func ErrorFrame(action string, code int, message string) []byte {
	return ServerFrame(action, Error{Code: code, Message: message})
}
