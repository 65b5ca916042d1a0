package wsconn

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzInflate inflates arbitrary bytes as two compressed client messages in
// a row, with the context taken over in a window of bits. Properties: no
// panic; errors are ErrProtocol or ErrTooLarge; no message exceeds the
// limit; the kept window never exceeds its size; and whatever inflated goes
// through the edge's own compressor and back unchanged.
func FuzzInflate(f *testing.F) {
	f.Add(compressSeed([]byte(`["hello","world"]`)), compressSeed([]byte(`["hello","world!"]`)), uint8(10), uint16(1024))
	f.Add(compressSeed(bytes.Repeat([]byte("a"), 5000)), []byte{0x00}, uint8(15), uint16(4096))
	f.Add([]byte{0xff, 0x00}, []byte{}, uint8(9), uint16(64))
	f.Fuzz(func(t *testing.T, first, second []byte, bits uint8, limit uint16) {
		bits = 9 + bits%7
		f := &inflater{keepBytes: 1 << bits}
		for _, p := range [][]byte{first, second} {
			out, err := f.inflate(p, int(limit))
			switch {
			case err != nil && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrTooLarge):
				t.Fatalf("inflate: unexpected error %v", err)
			case err != nil:
				return
			case len(out) > int(limit):
				t.Fatalf("inflated %d bytes past the limit %d", len(out), limit)
			case cap(f.window) > f.keepBytes:
				t.Fatalf("window of %d bytes, over %d", cap(f.window), f.keepBytes)
			}
			frame := DeflatedTextFrame(out, len(out)%2 == 0)
			hdr := 2
			switch frame[1] {
			case 126:
				hdr = 4
			case 127:
				hdr = 10
			}
			again, err := (&inflater{}).inflate(frame[hdr:], len(out))
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("the edge's compressor does not round-trip %q: %q, %v", out, again, err)
			}
		}
	})
}

func compressSeed(p []byte) []byte {
	frame := DeflatedTextFrame(p, false)
	switch frame[1] {
	case 126:
		return frame[4:]
	case 127:
		return frame[10:]
	}
	return frame[2:]
}
