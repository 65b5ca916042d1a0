package wsconn

import (
	"testing"
	"unicode/utf8"
)

// TestUTF8State checks the incremental check against utf8.Valid and the
// reference's prefix rule: every byte string of up to three bytes from a
// set covering each lead and continuation range, and longer ones, cut at
// every point. A state that lets an invalid byte through, or stops a valid
// one, fails here.
func TestUTF8State(t *testing.T) {
	alphabet := []byte{0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
		0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF}
	var inputs [][]byte
	for _, a := range alphabet {
		inputs = append(inputs, []byte{a})
		for _, b := range alphabet {
			inputs = append(inputs, []byte{a, b})
			for _, c := range alphabet {
				inputs = append(inputs, []byte{a, b, c}, []byte{'x', a, b, c})
			}
		}
	}
	inputs = append(inputs, []byte("κόσμε \U0001F600 \u20ac"), []byte("\xf0\x9f\x98\x80\xf0\x9f\x98"),
		[]byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited"))
	for _, in := range inputs {
		for cut := 0; cut <= len(in); cut++ {
			s, ok := utf8Complete.next(in[:cut])
			if ok {
				s, ok = s.next(in[cut:])
			}
			if want := validUTF8Prefix(in); ok != want {
				t.Fatalf("% x cut at %d: prefix ok %v, want %v", in, cut, ok, want)
			}
			if complete := ok && s == utf8Complete; complete != utf8.Valid(in) {
				t.Fatalf("% x cut at %d: complete %v, want %v", in, cut, complete, utf8.Valid(in))
			}
		}
	}
}
