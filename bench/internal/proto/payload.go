// Package proto holds what differs between the gateways under test: how a
// client authenticates, frames a request and recognises what it receives
// (Framer), and how a server-side publisher reaches all connections or one
// user (Publisher). Everything else in the load tool is shared, so both
// gateways are measured through the same client code paths.
package proto

import (
	"bytes"
	"strconv"
)

// MinPayload is the size of a payload without padding.
const MinPayload = len(`{"ts":1000000000000000000,"seq":0,"pad":""}`)

// AppendPayload appends the JSON object {"ts":<ns>,"seq":<n>,"pad":"…"},
// padded so that it is at least size bytes long. ts is the sender's clock
// in Unix nanoseconds, so a receiver on the same machine can compute the
// latency; seq lets it detect loss and duplicates.
func AppendPayload(dst []byte, ts int64, seq uint64, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"pad":"`...)
	for n := size - (len(dst) - start) - 2; n > 0; n-- {
		dst = append(dst, 'x')
	}
	return append(dst, `"}`...)
}

var (
	tsKey  = []byte(`"ts":`)
	seqKey = []byte(`"seq":`)
)

// ParsePayload finds the ts and seq of a payload anywhere in b (a frame of
// either gateway embeds the payload verbatim), without decoding the JSON
// around it. ok is false when either is missing.
func ParsePayload(b []byte) (ts int64, seq uint64, ok bool) {
	i := bytes.Index(b, tsKey)
	if i < 0 {
		return 0, 0, false
	}
	ts, n := digits(b[i+len(tsKey):])
	if n == 0 {
		return 0, 0, false
	}
	rest := b[i+len(tsKey)+n:]
	j := bytes.Index(rest, seqKey)
	if j < 0 {
		return 0, 0, false
	}
	s, m := digits(rest[j+len(seqKey):])
	if m == 0 {
		return 0, 0, false
	}
	return ts, uint64(s), true
}

// digits reads a non-negative decimal number at the start of b.
func digits(b []byte) (int64, int) {
	var v int64
	n := 0
	for n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	return v, n
}
