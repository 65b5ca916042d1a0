package wire

import (
	"errors"
	"fmt"
)

// Reliable inbound (DESIGN.md §8): a client frame's fourth element is a
// message id; the edge stores the frame in the inbound stream and answers
// Server/ack.
const (
	// MaxMsgIDLen bounds a client's message id.
	MaxMsgIDLen = 64

	// ActionAck answers a frame that carried a message id:
	// ["Server/ack", {"duplicate": bool, "durable": bool}, "<id>"], or
	// ["Server/ack:error", [503, "..."], "<id>"].
	ActionAck = "Server/ack"
)

// ErrBadMsgID is wrapped by ValidateMsgID's errors.
var ErrBadMsgID = errors.New("wire: invalid message id")

// msgIDChars are the bytes of a message id.
var msgIDChars = charTable("_-")

// ValidateMsgID reports whether s is a valid message id: 1–64 characters of
// A-Z a-z 0-9 _ -, so that "<user>.<id>" is a Nats-Msg-Id whose parts
// cannot be confused.
func ValidateMsgID(s string) error {
	if err := validate(s, MaxMsgIDLen, msgIDChars, ErrBadMsgID, "A-Z a-z 0-9 _ -"); err != nil {
		return fmt.Errorf("id: %w", err)
	}
	return nil
}

// Ack is the details of Server/ack.
type Ack struct {
	// Duplicate: the stream already had a frame with this id (within the
	// dedupe window); it was not stored, nor will it be handled, again.
	Duplicate bool `json:"duplicate"`
	// Durable: the frame is stored in the inbound stream; false when the
	// stream is off and the frame went to core NATS (at most once).
	Durable bool `json:"durable"`
}

// AppendAck appends ["Server/ack", {"duplicate": d, "durable": durable}, "<id>"]
// to dst; id must be valid (ValidateMsgID), so it needs no escaping.
func AppendAck(dst []byte, id string, a Ack) []byte {
	dst = append(dst, `["Server/ack",{"duplicate":`...)
	dst = appendBool(dst, a.Duplicate)
	dst = append(dst, `,"durable":`...)
	dst = appendBool(dst, a.Durable)
	dst = append(dst, `},"`...)
	dst = append(dst, id...)
	return append(dst, `"]`...)
}

// AckErrorFrame returns ["Server/ack:error", [code, message], "<id>"]; id
// must be valid (ValidateMsgID).
func AckErrorFrame(id string, code int, message string) []byte {
	f := ErrorFrame(ErrorAction(ActionAck), code, message)
	// ErrorFrame gives [action, details]; the id goes third, as a ref.
	return append(append(append(f[:len(f)-1], `,"`...), id...), `"]`...)
}

func appendBool(dst []byte, b bool) []byte {
	if b {
		return append(dst, "true"...)
	}
	return append(dst, "false"...)
}
