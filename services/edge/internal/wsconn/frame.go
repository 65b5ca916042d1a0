package wsconn

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/wsgate/wsgate/api/wire"
)

// Opcodes of RFC 6455 §5.2 the edge sends.
const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
	finBit  = 0x80
)

// maxControlPayload is the largest payload of a control frame (RFC 6455 §5.5).
const maxControlPayload = 125

var pingFrame = controlFrame(opPing, nil)

// TextFrame returns payload as one unmasked server text frame, ready to be
// written to any number of connections.
func TextFrame(payload []byte) []byte {
	return append(appendHeader(make([]byte, 0, 10+len(payload)), opText, len(payload)), payload...)
}

// CloseFrame returns a close frame with code and reason; wire.CloseNoStatus
// gives an empty one. The reason is cut, at a rune boundary, to fit.
func CloseFrame(code int, reason string) []byte {
	if code == wire.CloseNoStatus {
		return controlFrame(opClose, nil)
	}
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
		for len(reason) > 0 && !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	p := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return controlFrame(opClose, append(p, reason...))
}

func controlFrame(op byte, payload []byte) []byte {
	if len(payload) > maxControlPayload {
		payload = payload[:maxControlPayload]
	}
	return append(appendHeader(make([]byte, 0, 2+len(payload)), op, len(payload)), payload...)
}

func appendHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, finBit|op)
	switch {
	case n <= 125:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
	}
}
