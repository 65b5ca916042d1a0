package wsconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
)

// readerLimit is the message limit of the reader tests: three pooled
// buffers, so that a message at the limit needs a larger one.
const readerLimit = 3 * readBufferSize

// readerCase is a stream of client bytes and what Reader must make of it.
type readerCase struct {
	name      string
	in        []byte
	limit     int       // 0: readerLimit
	want      []Message // in order
	wantErr   error     // ErrProtocol, ErrTooLarge or ErrInvalidUTF8, before io.EOF; nil: io.EOF alone
	wholeOnly bool      // too long to feed one byte at a time
}

func readerCases() []readerCase {
	big := bytes.Repeat([]byte("0123456789abcdef"), readerLimit/16) // exactly readerLimit bytes
	half := big[:readerLimit/2]
	huge := bytes.Repeat([]byte{'x'}, 0x10000+10) // needs the 64-bit length
	over := frameHeader(true, OpText, readerLimit+1)
	pingOf := func(n int) []byte { return clientFrame(true, OpPing, bytes.Repeat([]byte{'p'}, n)) }
	rsv := func(bit byte) []byte { f := text("x"); f[0] |= bit; return f }
	unmasked := append([]byte{finBit | OpText, 5}, "hello"...)
	msb := append([]byte{finBit | OpBinary, 0x80 | 127}, 0x80, 0, 0, 0, 0, 0, 0, 1)
	msb = append(msb, maskKey[:]...)
	return []readerCase{
		// Messages.
		{name: "text", in: text("hello"), want: []Message{{OpText, []byte("hello")}}},
		{name: "empty text", in: text(""), want: []Message{{OpText, nil}}},
		{name: "binary", in: clientFrame(true, OpBinary, []byte{0, 1, 2, 0xFF}), want: []Message{{OpBinary, []byte{0, 1, 2, 0xFF}}}},
		{name: "two messages in one write", in: cat(text("one"), text("two")),
			want: []Message{{OpText, []byte("one")}, {OpText, []byte("two")}}},
		{name: "16-bit length", in: text(strings.Repeat("é", 100)), want: []Message{{OpText, []byte(strings.Repeat("é", 100))}}},
		{name: "fragmented with a ping between fragments",
			in: cat(clientFrame(false, OpText, []byte("hel")), pingOf(3), clientFrame(false, OpContinuation, []byte("lo ")),
				clientFrame(true, OpContinuation, []byte("world")), text("next")),
			want: []Message{{OpPing, []byte("ppp")}, {OpText, []byte("hello world")}, {OpText, []byte("next")}}},
		{name: "fragmented binary with empty fragments",
			in:   cat(clientFrame(false, OpBinary, nil), clientFrame(false, OpContinuation, []byte{1}), clientFrame(true, OpContinuation, nil)),
			want: []Message{{OpBinary, []byte{1}}}},
		{name: "control frames", in: cat(pingOf(0), clientFrame(true, OpPong, []byte("pong")), pingOf(maxControlPayload)),
			want: []Message{{OpPing, nil}, {OpPong, []byte("pong")}, {OpPing, bytes.Repeat([]byte{'p'}, maxControlPayload)}}},
		{name: "close frame, empty", in: clientFrame(true, OpClose, nil), want: []Message{{OpClose, nil}}},
		{name: "close frame with code and reason", in: clientFrame(true, OpClose, closePayload(1000, "bye")),
			want: []Message{{OpClose, closePayload(1000, "bye")}}},
		{name: "at the limit, larger than the pooled buffer", in: clientFrame(true, OpText, big), want: []Message{{OpText, big}}},
		{name: "fragmented up to the limit", in: cat(clientFrame(false, OpText, half), clientFrame(true, OpContinuation, half)),
			want: []Message{{OpText, big}}},
		{name: "64-bit length", in: clientFrame(true, OpBinary, huge), limit: len(huge), want: []Message{{OpBinary, huge}}, wholeOnly: true},

		// Over the limit: refused from the header, and nothing after is parsed.
		{name: "over the limit, header alone", in: over, wantErr: ErrTooLarge},
		{name: "over the limit, then a message", in: cat(clientFrame(true, OpText, append(big, '!')), text("after")), wantErr: ErrTooLarge},
		{name: "fragments over the limit", in: cat(clientFrame(false, OpText, big), frameHeader(true, OpContinuation, 1)), wantErr: ErrTooLarge},
		{name: "message before the one over the limit", in: cat(text("ok"), over), want: []Message{{OpText, []byte("ok")}}, wantErr: ErrTooLarge},

		// Protocol violations.
		{name: "unmasked", in: unmasked, wantErr: ErrProtocol},
		{name: "reserved bit 1", in: rsv(0x40), wantErr: ErrProtocol},
		{name: "reserved bit 2", in: rsv(0x20), wantErr: ErrProtocol},
		{name: "reserved bit 3", in: rsv(0x10), wantErr: ErrProtocol},
		{name: "unknown data opcode", in: clientFrame(true, 0x3, []byte("x")), wantErr: ErrProtocol},
		{name: "unknown control opcode", in: clientFrame(true, 0xB, nil), wantErr: ErrProtocol},
		{name: "control frame over 125 bytes", in: pingOf(maxControlPayload + 1), wantErr: ErrProtocol},
		{name: "fragmented control frame", in: clientFrame(false, OpPing, []byte("p")), wantErr: ErrProtocol},
		{name: "fragmented close frame", in: clientFrame(false, OpClose, nil), wantErr: ErrProtocol},
		{name: "continuation without a message", in: clientFrame(true, OpContinuation, []byte("x")), wantErr: ErrProtocol},
		{name: "new message inside a fragmented one", in: cat(clientFrame(false, OpText, []byte("a")), text("b")), wantErr: ErrProtocol},
		{name: "64-bit length with the top bit set", in: msb, wantErr: ErrProtocol},
		{name: "message before the violation, nothing after", in: cat(text("ok"), unmasked, text("after")),
			want: []Message{{OpText, []byte("ok")}}, wantErr: ErrProtocol},

		// UTF-8: text is checked as it arrives; binary is not.
		{name: "text of every rune length", in: text("a\u00e9\u20ac\U0001F600"), want: []Message{{OpText, []byte("a\u00e9\u20ac\U0001F600")}}},
		{name: "text fragmented inside runes", in: cat(clientFrame(false, OpText, []byte("\xe2\x82")), clientFrame(false, OpContinuation, []byte("\xac\xf0\x9f")),
			clientFrame(true, OpContinuation, []byte("\x98\x80"))), want: []Message{{OpText, []byte("\u20ac\U0001F600")}}},
		{name: "binary is not UTF-8 checked", in: clientFrame(true, OpBinary, []byte{0xFF}), want: []Message{{OpBinary, []byte{0xFF}}}},
		{name: "invalid byte", in: cat(text("ok"), text("a\xffb"), text("after")), want: []Message{{OpText, []byte("ok")}}, wantErr: ErrInvalidUTF8},
		{name: "invalid, frame not complete", in: text("a\xffbcdef")[:8], wantErr: ErrInvalidUTF8},
		{name: "overlong", in: text("\xc0\xaf"), wantErr: ErrInvalidUTF8},
		{name: "surrogate", in: text("\xed\xa0\x80"), wantErr: ErrInvalidUTF8},
		{name: "above U+10FFFF", in: text("\xf4\x90\x80\x80"), wantErr: ErrInvalidUTF8},
		{name: "rune cut at the end of the message", in: text("a\xe2\x82"), wantErr: ErrInvalidUTF8},
		{name: "invalid in the first fragment, before the rest",
			in:      cat(clientFrame(false, OpText, []byte("\xce\xba\xf4\x90")), clientFrame(true, OpContinuation, []byte("x"))),
			wantErr: ErrInvalidUTF8},
		{name: "invalid in a middle fragment, a ping before it",
			in:      cat(clientFrame(false, OpText, []byte("ok")), pingOf(1), clientFrame(false, OpContinuation, []byte("\xed\xa0")), pingOf(2)),
			want:    []Message{{OpPing, []byte("p")}},
			wantErr: ErrInvalidUTF8},
		{name: "fragments end inside a rune", in: cat(clientFrame(false, OpText, []byte("\xe2\x82")), clientFrame(true, OpContinuation, nil)),
			wantErr: ErrInvalidUTF8},

		// Ends.
		{name: "end of stream", in: nil},
		{name: "end inside a header", in: text("hello")[:1]},
		{name: "end inside a payload", in: text("hello")[:8]},
		{name: "end inside a fragmented message", in: clientFrame(false, OpText, []byte("a"))},
		{name: "end inside a rune", in: clientFrame(false, OpText, []byte("\xe2\x82"))},
	}
}

// TestReader feeds each case over loopback TCP all at once and one byte per
// segment (TCP_NODELAY), reading in step, so that every frame is also seen
// cut at every byte.
func TestReader(t *testing.T) {
	for _, tc := range readerCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"whole", "bytewise"} {
				if mode == "bytewise" && tc.wholeOnly {
					continue
				}
				t.Run(mode, func(t *testing.T) {
					server, client := tcpPair(t)
					limit := tc.limit
					if limit == 0 {
						limit = readerLimit
					}
					r, err := NewReader(server, limit)
					if err != nil {
						t.Fatal(err)
					}
					_ = server.SetReadDeadline(time.Now().Add(testTimeout))
					var msgs []Message
					var errs []error
					if mode == "whole" {
						if _, err := client.Write(tc.in); err != nil {
							t.Fatal(err)
						}
					} else {
						if err := client.SetNoDelay(true); err != nil {
							t.Fatal(err)
						}
						for i := range tc.in {
							if _, err := client.Write(tc.in[i : i+1]); err != nil {
								t.Fatal(err)
							}
							if err := r.Wait(); err != nil {
								t.Fatalf("Wait at byte %d: %v", i, err)
							}
							m, e := drain(t, r)
							msgs, errs = append(msgs, m...), append(errs, e...)
						}
					}
					if err := client.CloseWrite(); err != nil {
						t.Fatal(err)
					}
					m, e := readAll(t, r)
					checkRead(t, append(msgs, m...), append(errs, e...), tc.want, tc.wantErr)
				})
			}
		})
	}
}

// checkRead compares what a reader gave with what it should have.
func checkRead(t testing.TB, msgs []Message, errs []error, want []Message, wantErr error) {
	t.Helper()
	if len(msgs) != len(want) {
		t.Errorf("got %d messages, want %d", len(msgs), len(want))
	}
	for i := range min(len(msgs), len(want)) {
		if msgs[i].Op != want[i].Op || !bytes.Equal(msgs[i].Data, want[i].Data) {
			t.Errorf("message %d: op %#x, %d bytes %.40q; want op %#x, %d bytes %.40q",
				i, msgs[i].Op, len(msgs[i].Data), msgs[i].Data, want[i].Op, len(want[i].Data), want[i].Data)
		}
	}
	wantErrs := []error{io.EOF}
	if wantErr != nil {
		wantErrs = []error{wantErr, io.EOF}
	}
	if len(errs) != len(wantErrs) {
		t.Fatalf("errors %v, want %v", errs, wantErrs)
	}
	for i := range errs {
		if !errors.Is(errs[i], wantErrs[i]) {
			t.Errorf("errors %v, want %v", errs, wantErrs)
		}
	}
}

// TestReaderHoldsBufferOnlyWhileIncomplete: an idle reader holds no buffer,
// one with half a frame does.
func TestReaderHoldsBufferOnlyWhileIncomplete(t *testing.T) {
	server, client := tcpPair(t)
	r, err := NewReader(server, readerLimit)
	if err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(testTimeout))
	if err := client.SetNoDelay(true); err != nil {
		t.Fatal(err)
	}
	frame := clientFrame(true, OpText, bytes.Repeat([]byte{'a'}, 2*readBufferSize))
	steps := []struct {
		name    string
		write   []byte
		msgs    int
		holding bool
	}{
		{name: "a whole frame", write: text("one"), msgs: 1, holding: false},
		{name: "half a header", write: frame[:1], holding: true},
		{name: "the header and some payload", write: frame[1:100], holding: true},
		{name: "the rest", write: frame[100:], msgs: 1, holding: false},
	}
	for _, s := range steps {
		if _, err := client.Write(s.write); err != nil {
			t.Fatal(err)
		}
		// Wait at least once: the bytes written must have been read.
		var msgs []Message
		for first := true; first || len(msgs) < s.msgs; first = false {
			if err := r.Wait(); err != nil {
				t.Fatal(err)
			}
			m, errs := drain(t, r)
			if len(errs) > 0 {
				t.Fatalf("%s: %v", s.name, errs)
			}
			msgs = append(msgs, m...)
		}
		if len(msgs) != s.msgs {
			t.Fatalf("%s: %d messages, want %d", s.name, len(msgs), s.msgs)
		}
		if holding := r.buf != nil; holding != s.holding {
			t.Errorf("%s: holds a buffer: %v, want %v", s.name, holding, s.holding)
		}
	}
}

func TestReaderWaitDeadline(t *testing.T) {
	server, _ := tcpPair(t)
	r, err := NewReader(server, readerLimit)
	if err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(-time.Second))
	if err := r.Wait(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Wait past the deadline: %v, want os.ErrDeadlineExceeded", err)
	}
}

func TestNewReaderNeedsDescriptor(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := NewReader(a, readerLimit); err == nil {
		t.Fatal("NewReader accepted a net.Pipe, which has no descriptor")
	}
}

func TestParseClose(t *testing.T) {
	tests := []struct {
		name     string
		payload  []byte
		wantCode int
		wantOK   bool
	}{
		{name: "empty", payload: nil, wantCode: wire.CloseNoStatus, wantOK: true},
		{name: "code alone", payload: closePayload(1000, ""), wantCode: 1000, wantOK: true},
		{name: "code and reason", payload: closePayload(1001, "going away"), wantCode: 1001, wantOK: true},
		{name: "UTF-8 reason", payload: closePayload(4000, "до свидания"), wantCode: 4000, wantOK: true},
		{name: "1014", payload: closePayload(1014, ""), wantCode: 1014, wantOK: true},
		{name: "3000", payload: closePayload(3000, ""), wantCode: 3000, wantOK: true},
		{name: "4999", payload: closePayload(4999, ""), wantCode: 4999, wantOK: true},
		{name: "one byte", payload: []byte{0x03}, wantOK: false},
		{name: "0", payload: closePayload(0, ""), wantCode: 0},
		{name: "999", payload: closePayload(999, ""), wantCode: 999},
		{name: "1012 (IANA)", payload: closePayload(1012, ""), wantCode: 1012, wantOK: true},
		{name: "1016", payload: closePayload(1016, ""), wantCode: 1016},
		{name: "1100", payload: closePayload(1100, ""), wantCode: 1100},
		{name: "2000", payload: closePayload(2000, ""), wantCode: 2000},
		{name: "1004 reserved", payload: closePayload(1004, ""), wantCode: 1004},
		{name: "1005 never sent", payload: closePayload(1005, ""), wantCode: 1005},
		{name: "1006 never sent", payload: closePayload(1006, ""), wantCode: 1006},
		{name: "1015 never sent", payload: closePayload(1015, ""), wantCode: 1015},
		{name: "2999", payload: closePayload(2999, ""), wantCode: 2999},
		{name: "5000", payload: closePayload(5000, ""), wantCode: 5000},
		{name: "invalid UTF-8 reason", payload: closePayload(1000, "bad \xff"), wantCode: 1000},
		{name: "reason cut inside a rune", payload: closePayload(1000, "é")[:3], wantCode: 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, ok := ParseClose(tc.payload)
			if ok != tc.wantOK || (tc.wantCode != 0 && code != tc.wantCode) {
				t.Errorf("ParseClose(% x) = %d, %v; want %d, %v", tc.payload, code, ok, tc.wantCode, tc.wantOK)
			}
		})
	}
}

// TestTextFrame checks the header of TextFrame at each length encoding's edges.
func TestTextFrame(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 0xFFFF, 0x10000} {
		payload := bytes.Repeat([]byte{'t'}, n)
		f := TextFrame(payload)
		want := appendLength([]byte{finBit | opText}, n, false)
		if !bytes.Equal(f[:len(want)], want) || !bytes.Equal(f[len(want):], payload) {
			t.Errorf("TextFrame of %d bytes: header % x, want % x", n, f[:min(len(f), 10)], want)
		}
	}
	if got := binary.BigEndian.Uint16(CloseFrame(wire.CloseNormal, "")[2:]); got != wire.CloseNormal {
		t.Errorf("CloseFrame code %d", got)
	}
}
