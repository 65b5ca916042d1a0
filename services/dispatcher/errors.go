package dispatcher

import (
	"errors"
	"fmt"

	"github.com/wsgate/wsgate/api/wire"
)

// Sentinel errors of the package. Returned errors wrap them with the reason,
// so test them with errors.Is.
var (
	// ErrNilConn is returned by New when it is given no NATS connection.
	ErrNilConn = errors.New("dispatcher: nil NATS connection")
	// ErrInvalidOption is wrapped by the errors of the With* options.
	ErrInvalidOption = errors.New("dispatcher: invalid option")
	// ErrInvalidAction is wrapped when an action is not a valid action
	// (wire.ValidateAction, or wire.ValidateOutboundAction for sends).
	ErrInvalidAction = errors.New("dispatcher: invalid action")
	// ErrInvalidID is wrapped when a user, group, session or connection id
	// is not subject-safe (wire.ValidateID); nothing is published then.
	ErrInvalidID = errors.New("dispatcher: invalid id")
	// ErrInvalidRef is wrapped when a reply reference is neither a short
	// JSON string nor an integer (wire.ValidateRef).
	ErrInvalidRef = errors.New("dispatcher: invalid ref")
	// ErrInvalidFilter is wrapped when a filter has no property.
	ErrInvalidFilter = errors.New("dispatcher: invalid filter")
	// ErrInvalidCode is wrapped when an error code is not an HTTP error
	// status (400–599), the only codes the wire format allows.
	ErrInvalidCode = errors.New("dispatcher: invalid error code")
	// ErrInvalidErrorDetails is wrapped when an error response (an action
	// ending in ":error") is sent with details other than [code, message]
	// (wire.ValidateOutboundDetails): clients could not read it.
	ErrInvalidErrorDetails = errors.New("dispatcher: invalid error details")
	// ErrEncode is wrapped when details cannot be marshalled to JSON.
	ErrEncode = errors.New("dispatcher: cannot encode details")
	// ErrPublish is wrapped when NATS refuses a publish (e.g. the
	// connection is closed).
	ErrPublish = errors.New("dispatcher: publish failed")
	// ErrBadDetails is wrapped by Message.Decode. A handler that returns it
	// answers the client [400, "Invalid details"]: the decoder's own text,
	// which names Go types, never reaches the client.
	ErrBadDetails = errors.New("dispatcher: invalid details")
	// ErrNilHandler is returned by Handle when it is given a nil handler.
	ErrNilHandler = errors.New("dispatcher: nil handler")
	// ErrDuplicateAction is returned by Handle for an action that already
	// has a handler.
	ErrDuplicateAction = errors.New("dispatcher: action already handled")
	// ErrNoHandlers is returned by Start when no action has a handler.
	ErrNoHandlers = errors.New("dispatcher: no handlers")
	// ErrStarted is returned by Handle and Start once Start has succeeded.
	ErrStarted = errors.New("dispatcher: already started")
	// ErrClosed is returned by Handle and Start after Drain.
	ErrClosed = errors.New("dispatcher: drained")
	// ErrFinal is wrapped by Final: a reliable action's failure that must
	// not be retried.
	ErrFinal = errors.New("dispatcher: not to be retried")
)

// Final marks a handler's error as final for a reliable action (DESIGN.md
// §8): the client gets its error reply and the action goes to the
// dead-letter subject now, without the retries a failure gets, because
// trying again could do twice what the first try may have done (an HTTP
// route that is not idempotent). The reply is err's *Error when it holds
// one, else [500, "Internal Server Error"]. For other actions it changes
// nothing.
func Final(err error) error {
	return fmt.Errorf("%w: %w", ErrFinal, err)
}

// Error is an error a handler returns to answer the client with a chosen
// [code, message] instead of the generic [500, "Internal Server Error"]. It is
// the wire error type itself, so errors.As(err, &e) with e a *Error also
// finds a *wire.Error. Code must be an HTTP error status (400–599).
type Error = wire.Error

// NewError returns an *Error answering [code, message]. Return it (or wrap
// it) from a handler:
//
//	return dispatcher.NewError(wire.CodeNotFound, "no such room")
func NewError(code int, message string) *Error {
	return &Error{Code: code, Message: message}
}

// Messages of the error responses the dispatcher composes itself.
const (
	msgInternal   = "Internal Server Error"
	msgBadDetails = "Invalid details"
)
