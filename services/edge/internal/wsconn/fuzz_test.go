package wsconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzReader writes arbitrary bytes to one end of a socket pair, all at once
// (chunk 0) or chunk bytes per write (more for long inputs) read in step,
// and reads them with a Reader of the given limit. Properties: no panic; errors are ErrProtocol,
// ErrTooLarge or ErrInvalidUTF8 at most once, then io.EOF; no text or binary message exceeds
// the limit; and messages and the error are exactly those of refParse, a
// plain reading of RFC 6455 §5.
func FuzzReader(f *testing.F) {
	// A step costs a write, a wait and reads: at most maxSteps of them keep
	// an input, and above all the minimizing of one, cheap.
	const maxSteps = 32
	for _, tc := range readerCases() {
		if len(tc.in) <= 1<<12 {
			f.Add(tc.in, uint16(1024), uint8(0))
		}
	}
	f.Add(cat(clientFrame(false, OpText, []byte("hel")), clientFrame(true, OpPing, []byte("p")),
		clientFrame(true, OpContinuation, []byte("lo"))), uint16(5), uint8(1))
	f.Add(clientFrame(true, OpBinary, bytes.Repeat([]byte{7}, 5000)), uint16(6000), uint8(200))
	f.Fuzz(func(t *testing.T, in []byte, limit16 uint16, chunk uint8) {
		limit := int(limit16)
		server, client := socketPair(t)
		defer server.Close()
		defer client.Close()
		r, err := NewReader(server, limit)
		if err != nil {
			t.Fatal(err)
		}
		_ = server.SetReadDeadline(time.Now().Add(testTimeout))
		var msgs []Message
		var errs []error
		if chunk == 0 {
			// All at once, from another goroutine: the input may be larger
			// than the socket buffers.
			wrote := make(chan error, 1)
			go func() {
				_, err := client.Write(in)
				if cerr := client.CloseWrite(); err == nil {
					err = cerr
				}
				wrote <- err
			}()
			msgs, errs = readAll(t, r)
			if err := <-wrote; err != nil {
				t.Fatal(err)
			}
		} else {
			step := max(int(chunk), (len(in)+maxSteps-1)/maxSteps)
			for rest := in; len(rest) > 0; {
				n := min(step, len(rest))
				if _, err := client.Write(rest[:n]); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
				if err := r.Wait(); err != nil {
					t.Fatal(err)
				}
				m, e := drain(t, r)
				msgs, errs = append(msgs, m...), append(errs, e...)
			}
			if err := client.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			m, e := readAll(t, r)
			msgs, errs = append(msgs, m...), append(errs, e...)
		}
		for i, m := range msgs {
			if (m.Op == OpText || m.Op == OpBinary) && len(m.Data) > limit {
				t.Fatalf("message %d has %d bytes, over the limit %d", i, len(m.Data), limit)
			}
		}
		want, wantErr := refParse(in, limit)
		if wantErr == io.EOF {
			wantErr = nil
		}
		checkRead(t, msgs, errs, want, wantErr)
	})
}

// refParse reads in as RFC 6455 §5 has it, as plainly as it can be written:
// every check of a frame's header before its payload, limit on whole
// messages, text checked for UTF-8 as far as it has come (a text message so
// far must be a prefix of valid UTF-8). It returns the messages and what
// ended the input: io.EOF (also inside a frame), ErrProtocol, ErrTooLarge or
// ErrInvalidUTF8.
func refParse(in []byte, limit int) ([]Message, error) {
	var msgs []Message
	var frag []byte
	var fragOp byte
	fragging := false
	for {
		if len(in) < 2 {
			return msgs, io.EOF
		}
		fin, rsv, op := in[0]>>7 == 1, (in[0]>>4)&7, in[0]&0xF
		masked, n, hdr := in[1]>>7 == 1, uint64(in[1]&0x7F), 2
		switch n {
		case 126:
			if len(in) < 4 {
				return msgs, io.EOF
			}
			n, hdr = uint64(binary.BigEndian.Uint16(in[2:])), 4
		case 127:
			if len(in) < 10 {
				return msgs, io.EOF
			}
			n, hdr = binary.BigEndian.Uint64(in[2:]), 10
			if n >= 1<<63 {
				return msgs, ErrProtocol
			}
		}
		control := op == OpClose || op == OpPing || op == OpPong
		data := op == OpContinuation || op == OpText || op == OpBinary
		switch {
		case rsv != 0, !masked, !control && !data:
			return msgs, ErrProtocol
		case control && (!fin || n > 125):
			return msgs, ErrProtocol
		case op == OpContinuation && !fragging, data && op != OpContinuation && fragging:
			return msgs, ErrProtocol
		case data && uint64(len(frag))+n > uint64(limit):
			return msgs, ErrTooLarge
		}
		text := op == OpText || op == OpContinuation && fragOp == OpText
		if uint64(len(in)) < uint64(hdr)+4+n {
			if text && len(in) > hdr+4 {
				part := bytes.Clone(in[hdr+4:])
				for i := range part {
					part[i] ^= in[hdr+i%4]
				}
				if !validUTF8Prefix(append(bytes.Clone(frag), part...)) {
					return msgs, ErrInvalidUTF8
				}
			}
			return msgs, io.EOF
		}
		key, payload := in[hdr:hdr+4], bytes.Clone(in[hdr+4:hdr+4+int(n)])
		in = in[hdr+4+int(n):]
		for i := range payload {
			payload[i] ^= key[i%4]
		}
		switch {
		case control:
			msgs = append(msgs, Message{Op: op, Data: payload})
			continue
		case op != OpContinuation:
			fragOp, frag = op, nil
		}
		frag = append(frag, payload...)
		if text && (!validUTF8Prefix(frag) || fin && !utf8.Valid(frag)) {
			return msgs, ErrInvalidUTF8
		}
		fragging = !fin
		if fin {
			msgs = append(msgs, Message{Op: fragOp, Data: frag})
			frag = nil
		}
	}
}

// validUTF8Prefix reports whether some bytes appended to s make it valid
// UTF-8. Only the byte after a lead byte is narrowed (E0, ED, F0, F4), so
// trying every continuation byte there and 80 after it covers every case.
func validUTF8Prefix(s []byte) bool {
	if utf8.Valid(s) {
		return true
	}
	for more := 1; more <= 3; more++ {
		for b := 0x80; b <= 0xBF; b++ {
			tail := append([]byte{byte(b)}, bytes.Repeat([]byte{0x80}, more-1)...)
			if utf8.Valid(append(bytes.Clone(s), tail...)) {
				return true
			}
		}
	}
	return false
}

// TestRefParse checks the reference against the hand-written reader cases,
// so that the fuzzer compares Reader with something known to be right.
func TestRefParse(t *testing.T) {
	for _, tc := range readerCases() {
		t.Run(tc.name, func(t *testing.T) {
			limit := tc.limit
			if limit == 0 {
				limit = readerLimit
			}
			msgs, err := refParse(tc.in, limit)
			errs := []error{io.EOF}
			if !errors.Is(err, io.EOF) {
				errs = []error{err, io.EOF}
			}
			checkRead(t, msgs, errs, tc.want, tc.wantErr)
		})
	}
}
