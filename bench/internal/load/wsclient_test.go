package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate/bench/internal/proto"
)

// serverFrame is a frame as a server writes it: unmasked.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	b := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
	return append(b, payload...)
}

// readClientFrame reads one frame written by conn.write and unmasks it.
func readClientFrame(t *testing.T, r io.Reader) (op byte, payload []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if h[0]&0x80 == 0 || h[1]&0x80 == 0 {
		t.Fatalf("frame header %#x %#x: want FIN and the mask bit", h[0], h[1])
	}
	n := uint64(h[1] & 0x7F)
	if n >= 126 {
		l := make([]byte, map[uint64]int{126: 2, 127: 8}[n])
		if _, err := io.ReadFull(r, l); err != nil {
			t.Fatalf("read length: %v", err)
		}
		n = 0
		for _, b := range l {
			n = n<<8 | uint64(b)
		}
	}
	var key [4]byte
	if _, err := io.ReadFull(r, key[:]); err != nil {
		t.Fatalf("read mask: %v", err)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		t.Fatalf("read payload: %v", err)
	}
	for i := range payload {
		payload[i] ^= key[i&3]
	}
	return h[0] & 0x0F, payload
}

// collect feeds chunks to a fresh conn and returns the messages.
func collect(t *testing.T, chunks ...[]byte) []string {
	t.Helper()
	var c conn
	var got []string
	for _, ch := range chunks {
		if err := c.feed(ch, func(m []byte) bool { got = append(got, string(m)); return true }); err != nil {
			t.Fatalf("feed: %v", err)
		}
	}
	return got
}

func TestParserSplitAtEveryByte(t *testing.T) {
	bin := bytes.Repeat([]byte("b"), 300) // a 16-bit length
	var stream []byte
	stream = append(stream, serverFrame(true, opText, []byte("hello"))...)
	stream = append(stream, serverFrame(true, opBinary, bin)...)
	stream = append(stream, serverFrame(false, opText, []byte("frag1-"))...)
	stream = append(stream, serverFrame(true, opPong, []byte("ignored"))...) // control frames may interleave
	stream = append(stream, serverFrame(false, opContinuation, []byte("frag2-"))...)
	stream = append(stream, serverFrame(true, opContinuation, []byte("frag3"))...)
	stream = append(stream, serverFrame(true, opText, nil)...)
	want := []string{"hello", string(bin), "frag1-frag2-frag3", ""}

	check := func(name string, got []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d messages, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: message %d = %.20q…, want %.20q…", name, i, got[i], want[i])
			}
		}
	}
	check("whole", collect(t, stream))
	for cut := 1; cut < len(stream); cut++ {
		check("two reads", collect(t, stream[:cut], stream[cut:]))
	}
	var bytewise [][]byte
	for i := range stream {
		bytewise = append(bytewise, stream[i:i+1])
	}
	check("byte by byte", collect(t, bytewise...))

	big := bytes.Repeat([]byte("x"), 70000) // a 64-bit length, over several reads
	f := serverFrame(true, opBinary, big)
	if got := collect(t, f[:5], f[5:40000], f[40000:]); len(got) != 1 || got[0] != string(big) {
		t.Fatalf("64-bit length: %d messages", len(got))
	}
}

func TestParserStopKeepsTheRest(t *testing.T) {
	var c conn
	data := append(serverFrame(true, opText, []byte("first")), serverFrame(true, opText, []byte("second"))...)
	third := serverFrame(true, opText, []byte("third"))
	data = append(data, third[:4]...) // a partial frame
	var got []string
	stopAfterFirst := func(m []byte) bool { got = append(got, string(m)); return false }
	if err := c.feed(data, stopAfterFirst); err != nil || len(got) != 1 {
		t.Fatalf("feed: %v, messages %q", err, got)
	}
	all := func(m []byte) bool { got = append(got, string(m)); return true }
	if err := c.feed(nil, all); err != nil {
		t.Fatal(err)
	}
	if err := c.feed(third[4:], all); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "first,second,third" {
		t.Fatalf("messages %q", got)
	}
}

func TestParserPingAnsweredWithPong(t *testing.T) {
	c, server := connPair(t)
	ping := serverFrame(true, opPing, []byte("are you there"))
	if err := c.feed(ping[:3], nil); err != nil { // a partial frame: nothing to answer yet
		t.Fatal(err)
	}
	if err := c.feed(ping[3:], nil); err != nil {
		t.Fatal(err)
	}
	op, payload := readClientFrame(t, server)
	if op != opPong || string(payload) != "are you there" {
		t.Fatalf("answer %#x %q, want a pong with the ping's payload", op, payload)
	}
}

func TestWrite(t *testing.T) {
	c, server := connPair(t)
	for _, size := range []int{0, 125, 126, 0xFFFF, 0x10000, 1 << 20} { // 1 MiB: more than the socket buffers, so the write waits for room
		payload := bytes.Repeat([]byte{'m'}, size)
		errc := make(chan error, 1)
		go func() { errc <- c.write(opText, payload) }()
		op, got := readClientFrame(t, server)
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if op != opText || !bytes.Equal(got, payload) {
			t.Fatalf("frame %#x of %d bytes, want text of %d", op, len(got), size)
		}
	}
	c.close()
	if err := c.write(opText, []byte("late")); !errors.Is(err, errConnClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if _, err := server.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("server read after close: %v, want EOF", err)
	}
}

// connPair returns a conn and the server's end of its socket, on loopback.
func connPair(t *testing.T) (*conn, net.Conn) {
	t.Helper()
	ln := listen(t)
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	_ = server.SetDeadline(time.Now().Add(10 * time.Second))
	fd, err := dupSocket(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := &conn{fd: fd}
	t.Cleanup(c.close)
	return c, server
}

func TestParserErrors(t *testing.T) {
	huge := binary.BigEndian.AppendUint64([]byte{0x82, 127}, 1<<40)
	cases := []struct {
		name  string
		data  []byte
		close bool
	}{
		{"close", serverFrame(true, opClose, append([]byte{0x03, 0xE9}, "going away"...)), true},
		{"close without code", serverFrame(true, opClose, nil), true},
		{"oversized length", huge, false},
		{"oversized reassembly", append(serverFrame(false, opText, make([]byte, 60000)), binary.BigEndian.AppendUint64([]byte{0x80, 127}, maxMessage)...), false},
		{"masked", []byte{0x81, 0x81, 1, 2, 3, 4, 'x'}, false},
		{"reserved bits", serverFrame(true, opText|0x40, []byte("z")), false},
		{"continuation alone", serverFrame(true, opContinuation, []byte("z")), false},
		{"message inside fragmented", append(serverFrame(false, opText, []byte("a")), serverFrame(true, opText, []byte("b"))...), false},
		{"fragmented control", serverFrame(false, opPing, nil), false},
		{"long control", serverFrame(true, opPong, make([]byte, 126)), false},
		{"unknown opcode", serverFrame(true, 0x3, nil), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c conn
			err := c.feed(tc.data, func([]byte) bool { t.Fatal("no message expected"); return true })
			if err == nil {
				t.Fatal("feed accepted it")
			}
			if errors.Is(err, errClosedByServer) != tc.close {
				t.Fatalf("feed: %v", err)
			}
		})
	}
}

// upgradePeer accepts one connection on ln, answers its upgrade with accept
// and then extra, and returns the request and the server's end.
func upgradePeer(t *testing.T, ln net.Listener, accept func(key string) string, extra []byte) <-chan peerResult {
	t.Helper()
	res := make(chan peerResult, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			res <- peerResult{err: err}
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(nc))
		if err != nil {
			res <- peerResult{nc: nc, err: err}
			return
		}
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + accept(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
		_, err = nc.Write(append([]byte(resp), extra...))
		res <- peerResult{nc: nc, req: req, err: err}
	}()
	return res
}

type peerResult struct {
	nc  net.Conn
	req *http.Request
	err error
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

func TestUpgrade(t *testing.T) {
	frames := serverFrame(true, opText, []byte(`["Client/authentication","ok"]`))
	cases := []struct {
		name    string
		accept  func(string) string
		wantErr string
	}{
		{"right key", acceptKey, ""},
		{"wrong key", func(string) string { return acceptKey("another key") }, "Sec-WebSocket-Accept"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ln := listen(t)
			peer := upgradePeer(t, ln, tc.accept, frames)
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
			u, _ := url.Parse("ws://" + ln.Addr().String() + "/ws?x=1")
			rest, err := upgrade(nc, u, http.Header{"Authorization": {"Bearer T"}})
			p := <-peer
			if p.nc != nil {
				defer p.nc.Close()
			}
			if p.err != nil {
				t.Fatal(p.err)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("upgrade: %v, want an error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := p.req
			if r.URL.RequestURI() != "/ws?x=1" || r.Host != ln.Addr().String() || r.Header.Get("Authorization") != "Bearer T" ||
				r.Header.Get("Sec-WebSocket-Version") != "13" || !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
				t.Fatalf("request %s %s %v", r.URL, r.Host, r.Header)
			}
			// The frames written with the response are the parser's.
			if !bytes.Equal(rest, frames) {
				t.Fatalf("bytes after the response %q, want %q", rest, frames)
			}
		})
	}
}

// TestWorkerLoop runs a worker's event loop against a hand-written server
// on loopback: messages sent with the 101, split frames, a fragmented
// message, a ping, then the server's close frame or the worker's Close.
func TestWorkerLoop(t *testing.T) {
	for _, serverCloses := range []bool{true, false} {
		name := map[bool]string{true: "server closes", false: "worker closes"}[serverCloses]
		t.Run(name, func(t *testing.T) {
			ln := listen(t)
			data := func(seq uint64) []byte {
				msg := append([]byte(`["`+proto.WsgateAction+`",`), proto.AppendPayload(nil, time.Now().UnixNano(), seq, 64)...)
				return append(msg, ']')
			}
			first := append(serverFrame(true, opText, []byte(`["Client/authentication","ok"]`)), serverFrame(true, opText, data(0))...)
			peer := upgradePeer(t, ln, acceptKey, first)
			w, err := NewWorker(Job{Gateway: "wsgate", URLs: []string{"ws://" + ln.Addr().String() + "/ws"}, Secret: "s", Count: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			w.Ramp(context.Background())
			p := <-peer
			if p.err != nil {
				t.Fatal(p.err)
			}
			defer p.nc.Close()
			if c := w.Counters(); c.Opened != 1 || c.Connected != 1 {
				t.Fatalf("counters %+v, errors %v", c, w.ErrorSamples())
			}
			checkFor(t, "the message sent with the 101", func() bool { return w.Counters().Received == 1 })

			split := serverFrame(true, opText, data(1))
			frag := data(2)
			for _, b := range [][]byte{
				split[:7], split[7:],
				append(serverFrame(false, opText, frag[:10]), serverFrame(true, opContinuation, frag[10:])...),
			} {
				if _, err := p.nc.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			checkFor(t, "split and fragmented messages", func() bool { return w.Counters().Received == 3 })

			if _, err := p.nc.Write(serverFrame(true, opPing, []byte("p1"))); err != nil {
				t.Fatal(err)
			}
			_ = p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			if op, payload := readClientFrame(t, p.nc); op != opPong || string(payload) != "p1" {
				t.Fatalf("answer to a ping %#x %q", op, payload)
			}

			if serverCloses {
				if _, err := p.nc.Write(serverFrame(true, opClose, []byte{0x03, 0xE8})); err != nil {
					t.Fatal(err)
				}
				checkFor(t, "the drop", func() bool { c := w.Counters(); return c.Dropped == 1 && c.Connected == 0 })
				if s := w.ErrorSamples(); len(s) != 1 || !strings.Contains(s[0], "close frame") {
					t.Fatalf("error samples %q", s)
				}
				return
			}
			w.Close()
			if c := w.Counters(); c.Dropped != 0 || c.Connected != 0 || c.Received != 3 || c.Errors != 0 {
				t.Fatalf("after Close: %+v, errors %v", c, w.ErrorSamples())
			}
			// The worker's end of the socket is closed.
			if _, err := p.nc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("server read after Close: %v, want EOF", err)
			}
		})
	}
}

func TestWorkerRefused(t *testing.T) {
	ln := listen(t)
	refusal := serverFrame(true, opText, []byte(`["Client/authentication:error",{"code":401}]`))
	peer := upgradePeer(t, ln, acceptKey, refusal)
	w, err := NewWorker(Job{Gateway: "wsgate", URLs: []string{"ws://" + ln.Addr().String() + "/ws"}, Secret: "s", Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Ramp(context.Background())
	if p := <-peer; p.nc != nil {
		defer p.nc.Close()
	}
	c, samples := w.Counters(), w.ErrorSamples()
	if c.Failed != 1 || c.Opened != 0 || c.Connected != 0 || len(samples) != 1 || !strings.Contains(samples[0], "handshake refused") {
		t.Fatalf("counters %+v, errors %q", c, samples)
	}
}
