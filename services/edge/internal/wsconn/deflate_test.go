package wsconn

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestNegotiateDeflate(t *testing.T) {
	const base = "permessage-deflate; server_no_context_takeover"
	cases := []struct {
		name     string
		offers   []string
		ok       bool
		response string
		takeover bool
		bits     int
	}{
		{"none", nil, false, "", false, 0},
		{"other extension", []string{"x-webkit-deflate-frame"}, false, "", false, 0},
		{"bare", []string{"permessage-deflate"}, true, base, true, 15},
		{"chromium", []string{"permessage-deflate; client_max_window_bits"}, true, base + "; client_max_window_bits=9", true, 9},
		{"the same client window kept", []string{"permessage-deflate; client_max_window_bits=9"}, true, base + "; client_max_window_bits=9", true, 9},
		{"smaller client window kept", []string{"permessage-deflate; client_max_window_bits=8"}, true, base + "; client_max_window_bits=8", true, 8},
		{"quoted value", []string{`permessage-deflate; client_max_window_bits="12"`}, true, base + "; client_max_window_bits=9", true, 9},
		{"gorilla", []string{"permessage-deflate; server_no_context_takeover; client_no_context_takeover"}, true, base + "; client_no_context_takeover", false, 15},
		{"case-insensitive", []string{"Permessage-Deflate; Client_No_Context_Takeover"}, true, base + "; client_no_context_takeover", false, 15},
		{"server window 15", []string{"permessage-deflate; server_max_window_bits=15"}, true, base, true, 15},
		{"server window 10 declined", []string{"permessage-deflate; server_max_window_bits=10"}, false, "", false, 0},
		{"fallback offer", []string{"permessage-deflate; server_max_window_bits=10, permessage-deflate"}, true, base, true, 15},
		{"fallback in a second header", []string{"permessage-deflate; server_max_window_bits=9", "permessage-deflate; client_no_context_takeover"}, true, base + "; client_no_context_takeover", false, 15},
		{"unknown parameter", []string{"permessage-deflate; foo"}, false, "", false, 0},
		{"repeated parameter", []string{"permessage-deflate; client_no_context_takeover; client_no_context_takeover"}, false, "", false, 0},
		{"value on a flag", []string{"permessage-deflate; server_no_context_takeover=1"}, false, "", false, 0},
		{"window too small", []string{"permessage-deflate; client_max_window_bits=7"}, false, "", false, 0},
		{"window too large", []string{"permessage-deflate; client_max_window_bits=16"}, false, "", false, 0},
		{"leading zero", []string{"permessage-deflate; client_max_window_bits=09"}, false, "", false, 0},
		{"server window without value", []string{"permessage-deflate; server_max_window_bits"}, false, "", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := NegotiateDeflate(tc.offers)
			if ok != tc.ok || d.Response != tc.response || ok && (d.Takeover != tc.takeover || d.WindowBits != tc.bits) {
				t.Errorf("NegotiateDeflate(%q) = %+v, %v; want %q takeover %v bits %d, %v",
					tc.offers, d, ok, tc.response, tc.takeover, tc.bits, tc.ok)
			}
		})
	}
}

// inflateServerFrame undoes DeflatedTextFrame as a client does.
func inflateServerFrame(t *testing.T, frame []byte) []byte {
	t.Helper()
	if frame[0] != finBit|rsv1|opText {
		t.Fatalf("first byte %#x, want FIN|RSV1|text", frame[0])
	}
	n, hdr := int(frame[1]), 2
	switch n {
	case 126:
		n, hdr = int(frame[2])<<8|int(frame[3]), 4
	case 127:
		n, hdr = 0, 10
		for _, b := range frame[2:10] {
			n = n<<8 | int(b)
		}
	}
	if len(frame) != hdr+n {
		t.Fatalf("frame of %d bytes, header says %d+%d", len(frame), hdr, n)
	}
	p := frame[hdr:]
	if bytes.HasSuffix(p, deflateTail) {
		t.Fatalf("the 00 00 ff ff tail was not stripped")
	}
	out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateEnd))))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDeflatedTextFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 300, 70000, 1 << 20} {
		payload := []byte(strings.Repeat(fmt.Sprintf(`{"n":%d,"s":"abc"}`, n), n/16+1)[:n])
		for _, shared := range []bool{false, true} {
			if got := inflateServerFrame(t, DeflatedTextFrame(payload, shared)); !bytes.Equal(got, payload) {
				t.Errorf("%d bytes, shared %v: round trip changed the payload", n, shared)
			}
		}
	}
}

// TestDeflateThresholdPays measures the gain the threshold is chosen on:
// at the threshold realistic JSON shrinks by at least 10 %; half of it
// gains nothing.
func TestDeflateThresholdPays(t *testing.T) {
	gain := func(n int) int {
		p := realisticPayload(n)
		return 100 - 100*len(DeflatedTextFrame(p, false))/len(TextFrame(p))
	}
	at, half := gain(DeflateThreshold), gain(DeflateThreshold/2)
	big := 100 - gain(2048)
	t.Logf("saved: %d B %d %%, %d B %d %%; 2 KiB compressed to %d %%", DeflateThreshold, at, DeflateThreshold/2, half, big)
	if at < 10 {
		t.Errorf("at the threshold compression saves %d %%: the threshold is too low", at)
	}
	if half > 5 {
		t.Errorf("at half the threshold compression saves %d %%: the threshold could be lower", half)
	}
	if big > 45 {
		t.Errorf("2 KiB of JSON compressed to %d %% of its size, want ≤ 45 %%", big)
	}
}

// TestOutbound_AMessageForManyIsCompressedHarder: a message that may reach
// sharedReach connections is compressed at the slower level, whose cost is
// spread over them, and still inflates to the payload; one for fewer keeps
// the fast level.
func TestOutbound_AMessageForManyIsCompressedHarder(t *testing.T) {
	p := realisticPayload(2048)
	frame := func(reach int) []byte {
		o := NewOutbound(p)
		o.MayReach(reach)
		return o.FrameFor(&Conn{deflate: true})
	}
	few, many := frame(sharedReach-1), frame(sharedReach)
	t.Logf("2 KiB of JSON: %d bytes for few connections, %d for many", len(few), len(many))
	if !bytes.Equal(few, DeflatedTextFrame(p, false)) {
		t.Error("a message for fewer than sharedReach connections is not compressed at the fast level")
	}
	if len(many) >= len(few) {
		t.Errorf("a message for many connections compressed to %d bytes, not fewer than the %d of one for few", len(many), len(few))
	}
	if got := inflateServerFrame(t, many); !bytes.Equal(got, p) {
		t.Error("the shared frame does not inflate to the payload")
	}
}

// realisticPayload is about n bytes of a server frame an application
// broadcasts: ["chat/history", {...}] with ids, users and timestamps.
func realisticPayload(n int) []byte {
	var b strings.Builder
	b.WriteString(`["chat/history",{"room":"lobby-42","messages":[`)
	users := []string{"alice", "bob", "carol", "dmitri", "eve"}
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"user":"%s","at":"2026-12-07T00:%02d:%02dZ","text":"message %d from %s"}`,
			1000+i*7, users[i%len(users)], i%60, (i*13)%60, i, users[(i*3)%len(users)])
	}
	b.WriteString(`]}]`)
	return []byte(b.String()[:n])
}

func TestInflaterWindow(t *testing.T) {
	f := &inflater{keepBytes: 1024}
	var all []byte
	for i := range 50 {
		out := bytes.Repeat([]byte{byte('a' + i%26)}, 37*i)
		f.keep(out)
		all = append(all, out...)
		want := all[max(0, len(all)-1024):]
		if !bytes.Equal(f.window, want) {
			t.Fatalf("after %d messages the window is %d bytes, not the last %d", i+1, len(f.window), len(want))
		}
		if cap(f.window) > 1024 {
			t.Fatalf("window array of %d bytes, over 1 KiB", cap(f.window))
		}
	}
}

// TestInflateLimit: the limit counts inflated bytes.
func TestInflateLimit(t *testing.T) {
	frame := DeflatedTextFrame(bytes.Repeat([]byte("x"), 10000), false)
	p := frame[4:] // 126-length header: the compressed 10,000 bytes take more than 125
	if frame[1] != 126 {
		p = frame[2:]
	}
	f := &inflater{}
	if out, err := f.inflate(p, 10000); err != nil || len(out) != 10000 {
		t.Fatalf("at the limit: %d bytes, %v", len(out), err)
	}
	if _, err := f.inflate(p, 9999); err != ErrTooLarge {
		t.Fatalf("over the limit: %v, want ErrTooLarge", err)
	}
}

// compressClient compresses s as a client does, the dictionary being the
// client's earlier messages cut to window together with s; it returns the
// payload without the 00 00 ff ff tail.
func compressClient(t *testing.T, history *[]byte, s []byte, window int) []byte {
	t.Helper()
	var dict []byte
	if history != nil {
		dict = (*history)[max(0, len(*history)-max(0, window-len(s))):]
		*history = append(*history, s...)
	}
	var b bytes.Buffer
	w, err := flate.NewWriterDict(&b, flate.BestCompression, dict)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(s)
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), deflateTail)
}

// zFrame is a masked client frame with RSV1 set on it.
func zFrame(fin bool, op byte, payload []byte) []byte {
	f := clientFrame(fin, op, payload)
	f[0] |= rsv1
	return f
}

// TestReaderDeflate: compressed messages are inflated with the client's
// context as negotiated, and between messages the reader holds no read
// buffer and at most the negotiated window (512 bytes for the window browsers
// are asked for): a connection's idle memory grows by no more than that.
func TestReaderDeflate(t *testing.T) {
	tests := []struct {
		name      string
		deflate   Deflate
		window    int // the client's window
		maxWindow int // largest window the reader may keep
	}{
		{"browser window 9 bits", Deflate{Takeover: true, WindowBits: 9}, 1 << 9, 1 << 9},
		{"window 8 bits kept as 9 (zlib)", Deflate{Takeover: true, WindowBits: 8}, 1 << 8, 1 << 9},
		{"window 12 bits", Deflate{Takeover: true, WindowBits: 12}, 1 << 12, 1 << 12},
		{"no window offered", Deflate{Takeover: true, WindowBits: 15}, 1 << 15, 1 << 15},
		{"no context takeover", Deflate{WindowBits: 15}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			r, err := NewReader(server, readerLimit)
			if err != nil {
				t.Fatal(err)
			}
			r.SetDeflate(tc.deflate)
			_ = server.SetReadDeadline(time.Now().Add(testTimeout))
			var history *[]byte
			largest := 850
			if tc.deflate.Takeover {
				history = new([]byte)
				largest = tc.window // a client keeps every back-reference within its window
			}
			msg := func(i int) []byte { return realisticPayload(min(100+50*i, largest)) }
			for i := range 12 {
				frame := zFrame(true, OpText, compressClient(t, history, msg(i), tc.window))
				if _, err := client.Write(frame); err != nil {
					t.Fatal(err)
				}
				var msgs []Message
				for len(msgs) == 0 {
					if err := r.Wait(); err != nil {
						t.Fatal(err)
					}
					m, errs := drain(t, r)
					if len(errs) > 0 {
						t.Fatalf("message %d: %v", i, errs)
					}
					msgs = append(msgs, m...)
				}
				if len(msgs) != 1 || !bytes.Equal(msgs[0].Data, msg(i)) {
					t.Fatalf("message %d: got %d messages, want it inflated", i, len(msgs))
				}
				if r.buf != nil {
					t.Errorf("message %d: the reader holds its buffer between messages", i)
				}
				if c := cap(r.inflate.window); c > tc.maxWindow {
					t.Errorf("message %d: keeps a %d-byte window, want at most %d", i, c, tc.maxWindow)
				}
			}
		})
	}
}

// TestReaderDeflateRefusals: what RFC 7692 and the limit refuse.
func TestReaderDeflateRefusals(t *testing.T) {
	hello := compressClient(t, nil, []byte(`["hello","world"]`), 0)
	bomb := compressClient(t, nil, bytes.Repeat([]byte{' '}, readerLimit+1), 0)
	invalid := compressClient(t, nil, []byte("caf\xc3("), 0)
	tests := []struct {
		name    string
		deflate bool
		input   []byte
		want    error
	}{
		{"RSV1 without negotiation", false, zFrame(true, OpText, hello), ErrProtocol},
		{"RSV1 on a continuation", true, cat(zFrame(false, OpText, hello[:3]), zFrame(true, OpContinuation, hello[3:])), ErrProtocol},
		{"RSV1 on a ping", true, zFrame(true, OpPing, nil), ErrProtocol},
		{"inflates past the limit", true, zFrame(true, OpText, bomb), ErrTooLarge},
		{"invalid UTF-8 once inflated", true, zFrame(true, OpText, invalid), ErrInvalidUTF8},
		{"not deflate", true, zFrame(true, OpText, []byte{0xff, 0xff, 0xff}), ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			r, err := NewReader(server, readerLimit)
			if err != nil {
				t.Fatal(err)
			}
			if tc.deflate {
				r.SetDeflate(Deflate{WindowBits: 15})
			}
			_ = server.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := client.Write(tc.input); err != nil {
				t.Fatal(err)
			}
			_ = client.Close()
			msgs, errs := readAll(t, r)
			if len(msgs) != 0 || len(errs) == 0 || !errors.Is(errs[0], tc.want) {
				t.Errorf("got %d messages and %v, want %v", len(msgs), errs, tc.want)
			}
		})
	}
}
