package load

import "github.com/wsgate/wsgate/bench/internal/proto"

// appendPayload appends a payload of size bytes: application-like JSON
// when text, else the padded object of the standard loads.
func appendPayload(text bool, dst []byte, ts int64, seq uint64, size int) []byte {
	if text {
		return proto.AppendTextPayload(dst, ts, seq, size)
	}
	return proto.AppendPayload(dst, ts, seq, size)
}
