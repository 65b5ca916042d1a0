package proto

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// Reliable requests (DESIGN.md §8): a wsgate frame with a message id,
// [method, payload, ref, "<id>"], which the edge stores in the inbound
// stream and answers with ["Server/ack", {"duplicate": d, "durable": b},
// "<id>"] before the dispatcher's reply comes.

// MsgIDLen is the length of the tool's message ids: 32 hex digits, as long
// as the JS client's random ids (128 bits), so the stream's dedupe keys
// have the size real clients give them.
const MsgIDLen = 32

// AppendMsgID appends the message id of request seq sent at sendNs (Unix
// ns): both as 16 hex digits, so that the ack alone tells the send time.
func AppendMsgID(dst []byte, seq uint64, sendNs int64) []byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seq)
	binary.BigEndian.PutUint64(b[8:], uint64(sendNs))
	return hex.AppendEncode(dst, b[:])
}

// ParseMsgID returns what AppendMsgID put in id.
func ParseMsgID(id []byte) (seq uint64, sendNs int64, ok bool) {
	if len(id) != MsgIDLen {
		return 0, 0, false
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], id); err != nil {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[:8]), int64(binary.BigEndian.Uint64(b[8:])), true
}

// AppendWsgateReliable appends [method, payload, ref, "<id>"].
func AppendWsgateReliable(dst []byte, method string, ref uint64, id, payload []byte) []byte {
	dst = append(dst, `["`...)
	dst = append(dst, method...)
	dst = append(dst, `",`...)
	dst = append(dst, payload...)
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, ref, 10)
	dst = append(dst, `,"`...)
	dst = append(dst, id...)
	return append(dst, `"]`...)
}

// Ack is what the tool reads of a Server/ack.
type Ack struct {
	ID        []byte // aliases the frame
	Duplicate bool
	Durable   bool
}

// ParseAck reads the body of a KindAck message (what follows the action):
// {"duplicate":d,"durable":b},"<id>"].
func ParseAck(body []byte) (Ack, bool) {
	end := bytes.IndexByte(body, '}')
	if end < 0 {
		return Ack{}, false
	}
	details, rest := body[:end], body[end+1:]
	rest, ok := bytes.CutPrefix(rest, []byte(`,"`))
	if !ok {
		return Ack{}, false
	}
	q := bytes.IndexByte(rest, '"')
	if q < 0 {
		return Ack{}, false
	}
	return Ack{
		ID:        rest[:q],
		Duplicate: bytes.Contains(details, []byte(`"duplicate":true`)),
		Durable:   bytes.Contains(details, []byte(`"durable":true`)),
	}, true
}
