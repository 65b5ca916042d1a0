package proto

import (
	"strconv"
	"testing"
)

// With history on (DESIGN.md §8) the edge sends every stored message as
// [action, details, ref|null, seq] and a Server/recovery frame after ok:
// the first must count as data with the payload's own ts and seq (not the
// stream's), the second as neither data nor an error.
func TestWsgateDecode_HistoryFrames(t *testing.T) {
	payload := AppendPayload(nil, 1234567890123, 41, 128)
	for _, frame := range []string{
		`["bench",` + string(payload) + `,null,987654]`,
		`["bench",` + string(payload) + `,"r-1",7]`,
		`["bench",` + string(payload) + `]`,
	} {
		var got []Msg
		Wsgate{}.Decode([]byte(frame), func(m Msg) { got = append(got, m) })
		if len(got) != 1 || got[0].Kind != KindData {
			t.Fatalf("%s: decoded %v, want one data message", frame, got)
		}
		ts, seq, ok := ParsePayload(got[0].Body)
		if !ok || ts != 1234567890123 || seq != 41 {
			t.Fatalf("%s: payload ts %d seq %d ok %v, want 1234567890123 41 (the payload's, not the stream's)", frame, ts, seq, ok)
		}
	}
	for _, recovered := range []bool{true, false} {
		frame := `["Server/recovery",{"epoch":"e1","recovered":` + strconv.FormatBool(recovered) + `,"count":0}]`
		Wsgate{}.Decode([]byte(frame), func(m Msg) {
			if m.Kind != KindOther {
				t.Fatalf("%s decoded as %s, want other (neither data nor error)", frame, m.Kind)
			}
		})
	}
}
