package wsconn

import "unicode/utf8"

// utf8State is where a UTF-8 check that goes on across reads stands: at a
// rune boundary, or inside a rune with the bytes it still needs (and, right
// after some lead bytes, the narrower range its next byte must fall in: no
// overlong forms, no surrogates, nothing above U+10FFFF).
type utf8State uint8

const (
	utf8Complete utf8State = iota // at a rune boundary
	utf8Need1                     // one continuation byte (80–BF) to go
	utf8Need2                     // two to go
	utf8Need3                     // three to go
	utf8AfterE0                   // next A0–BF, then one more
	utf8AfterED                   // next 80–9F, then one more
	utf8AfterF0                   // next 90–BF, then two more
	utf8AfterF4                   // next 80–8F, then two more
)

// next checks p, the next bytes of a text, and returns the state after
// them; ok is false as soon as a byte cannot continue valid UTF-8. The bulk
// goes to utf8.Valid; only a rune cut by a read's end is taken byte by byte.
func (s utf8State) next(p []byte) (utf8State, bool) {
	// Finish the rune the previous bytes left open.
	for len(p) > 0 && s != utf8Complete {
		var ok bool
		if s, ok = s.step(p[0]); !ok {
			return s, false
		}
		p = p[1:]
	}
	// The last rune may be cut: it goes byte by byte, the rest at once.
	cut := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		if b := p[i]; b >= 0xC0 {
			if leadLen(b) > len(p)-i {
				cut = i
			}
			break
		} else if b < 0x80 {
			break
		}
	}
	if !utf8.Valid(p[:cut]) {
		return s, false
	}
	for _, b := range p[cut:] {
		var ok bool
		if s, ok = s.step(b); !ok {
			return s, false
		}
	}
	return s, true
}

// leadLen is the length of the rune a lead byte of C0 or above announces.
func leadLen(b byte) int {
	switch {
	case b < 0xE0:
		return 2
	case b < 0xF0:
		return 3
	}
	return 4
}

// step takes one byte.
func (s utf8State) step(b byte) (utf8State, bool) {
	switch s {
	case utf8Complete:
		switch {
		case b < 0x80:
			return utf8Complete, true
		case b >= 0xC2 && b <= 0xDF:
			return utf8Need1, true
		case b == 0xE0:
			return utf8AfterE0, true
		case b == 0xED:
			return utf8AfterED, true
		case b >= 0xE1 && b <= 0xEF:
			return utf8Need2, true
		case b == 0xF0:
			return utf8AfterF0, true
		case b >= 0xF1 && b <= 0xF3:
			return utf8Need3, true
		case b == 0xF4:
			return utf8AfterF4, true
		}
		return s, false
	case utf8AfterE0:
		return utf8Need1, b >= 0xA0 && b <= 0xBF
	case utf8AfterED:
		return utf8Need1, b >= 0x80 && b <= 0x9F
	case utf8AfterF0:
		return utf8Need2, b >= 0x90 && b <= 0xBF
	case utf8AfterF4:
		return utf8Need2, b >= 0x80 && b <= 0x8F
	}
	// utf8Need1, utf8Need2, utf8Need3: any continuation byte.
	return s - 1, b >= 0x80 && b <= 0xBF
}
