package wsconn

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testTimeout bounds every wait of the tests (reads, writers, polls).
const testTimeout = 10 * time.Second

// tcpPair returns the two ends of a loopback TCP connection: server, the
// side given to wsconn, and client, the side the test plays the peer on.
// Both are closed when the test ends.
func tcpPair(t testing.TB) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			c = nil
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		cc.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

// socketPair returns the two ends of an AF_UNIX stream socket pair, each a
// *net.UnixConn with its own descriptor: cheaper to make than a TCP pair,
// and a real descriptor, as Reader and Conn need. The caller closes them.
func socketPair(t testing.TB) (server, client *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fileConn(t, fds[0]), fileConn(t, fds[1])
}

// fileConn turns a socket descriptor into a net.Conn (net.FileConn
// duplicates it; the original is closed).
func fileConn(t testing.TB, fd int) *net.UnixConn {
	t.Helper()
	f := os.NewFile(uintptr(fd), "socketpair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn)
}

// maskKey masks every frame the tests send as a client.
var maskKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// clientFrame builds a masked client frame with the shortest length
// encoding, as RFC 6455 §5.2 has it.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b := appendLength([]byte{op}, len(payload), true)
	if fin {
		b[0] |= finBit
	}
	b = append(b, maskKey[:]...)
	for i, c := range payload {
		b = append(b, c^maskKey[i&3])
	}
	return b
}

// appendLength appends the second byte of a frame header (mask bit and
// length) and the extended length, if any.
func appendLength(b []byte, n int, masked bool) []byte {
	var m byte
	if masked {
		m = 0x80
	}
	switch {
	case n <= 125:
		return append(b, m|byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(b, m|126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, m|127), uint64(n))
	}
}

// frameHeader is the header alone (mask key included) of a masked frame
// whose payload has n bytes.
func frameHeader(fin bool, op byte, n int) []byte {
	b := appendLength([]byte{op}, n, true)
	if fin {
		b[0] |= finBit
	}
	return append(b, maskKey[:]...)
}

func text(s string) []byte { return clientFrame(true, OpText, []byte(s)) }

func cat(frames ...[]byte) []byte { return bytes.Join(frames, nil) }

// closePayload is a close frame's payload: code and reason.
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

// readAll reads r until the connection ends, calling Wait whenever Next
// needs more bytes, and returns every message (payloads copied: control
// frames share the reader's buffer) and every error, io.EOF last. An error
// other than ErrProtocol, ErrTooLarge, ErrInvalidUTF8 and io.EOF fails the test.
func readAll(t testing.TB, r *Reader) (msgs []Message, errs []error) {
	t.Helper()
	for {
		m, ok, err := r.Next()
		switch {
		case ok && err != nil:
			t.Fatalf("Next returned a message and %v", err)
		case ok:
			msgs = append(msgs, Message{Op: m.Op, Data: bytes.Clone(m.Data)})
		case err == io.EOF:
			if _, ok, again := r.Next(); ok || again != io.EOF {
				t.Fatalf("Next after io.EOF: ok=%v err=%v, want io.EOF again", ok, again)
			}
			return msgs, append(errs, err)
		case errors.Is(err, ErrProtocol), errors.Is(err, ErrTooLarge), errors.Is(err, ErrInvalidUTF8):
			errs = append(errs, err)
		case err != nil:
			t.Fatalf("Next: unexpected error %v", err)
		default:
			if err := r.Wait(); err != nil {
				t.Fatalf("Wait: %v", err)
			}
		}
	}
}

// drain calls Next until it needs more bytes or fails, and returns what it gave.
func drain(t testing.TB, r *Reader) (msgs []Message, errs []error) {
	t.Helper()
	for {
		m, ok, err := r.Next()
		if ok {
			msgs = append(msgs, Message{Op: m.Op, Data: bytes.Clone(m.Data)})
			continue
		}
		if err != nil {
			return msgs, append(errs, err)
		}
		return msgs, errs
	}
}

// serverFrame is one frame the server wrote, as the peer parsed it.
type serverFrame struct {
	fin     bool
	op      byte
	payload []byte
}

func (f serverFrame) String() string {
	p := f.payload
	if len(p) > 40 {
		p = p[:40]
	}
	return fmt.Sprintf("{fin=%v op=%#x %d bytes %q}", f.fin, f.op, len(f.payload), p)
}

// readServerFrame parses one server frame strictly: unmasked, no reserved
// bits, the shortest length encoding.
func readServerFrame(r *bufio.Reader) (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return serverFrame{}, err
	}
	f := serverFrame{fin: h[0]&finBit != 0, op: h[0] & 0x0F}
	if h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return f, fmt.Errorf("bad server frame header % x", h)
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return f, err
		}
		if n = uint64(binary.BigEndian.Uint16(e[:])); n < 126 {
			return f, fmt.Errorf("length %d not in its shortest form", n)
		}
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(r, e[:]); err != nil {
			return f, err
		}
		if n = binary.BigEndian.Uint64(e[:]); n <= 0xFFFF || n>>63 != 0 {
			return f, fmt.Errorf("length %d not in its shortest form", n)
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return f, fmt.Errorf("payload of %d bytes: %w", n, err)
	}
	return f, nil
}

// readServerFrames parses frames from nc until it ends. The close frame must
// be the last: anything after it fails the test.
func readServerFrames(t testing.TB, nc net.Conn) []serverFrame {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(testTimeout))
	br := bufio.NewReader(nc)
	var frames []serverFrame
	for {
		f, err := readServerFrame(br)
		if err == io.EOF {
			return frames
		}
		if err != nil {
			t.Errorf("after %d frames: %v", len(frames), err)
			return frames
		}
		if len(frames) > 0 && frames[len(frames)-1].op == opClose {
			t.Errorf("frame %v after the close frame", f)
		}
		frames = append(frames, f)
	}
}

// countStats counts what the writers report.
type countStats struct {
	frames, bytes, latencies atomic.Int64
}

func (s *countStats) Wrote(frames, bytes int) { s.frames.Add(int64(frames)); s.bytes.Add(int64(bytes)) }
func (s *countStats) Latency(d time.Duration) { s.latencies.Add(1) }

var _ Stats = (*countStats)(nil)

// nopStats is Stats for benchmarks.
type nopStats struct{}

func (nopStats) Wrote(int, int)        {}
func (nopStats) Latency(time.Duration) {}

// Wait is Fill that blocks until the socket has bytes, or its end (the
// edge waits with a poller instead); it fails only when waiting failed (the
// read deadline passed, the socket was closed).
func (r *Reader) Wait() error {
	if r.err != nil {
		return nil // Next has the end to report
	}
	r.n, r.rerr = 0, nil
	if err := r.rc.Read(r.tryRead); err != nil {
		return err
	}
	switch {
	case r.rerr != nil:
		r.err = r.rerr
	case r.n == 0:
		r.err = io.EOF
	default:
		r.w += r.n
	}
	return nil
}
