package load

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The client side of RFC 6455, as much as the load tool needs: the opening
// handshake, masked writes, and a parser of the server's frames that is fed
// whatever one read returned, so that an event loop can serve many
// connections without a goroutine parked in each.

// Opcodes of RFC 6455 §5.2.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

const (
	// maxMessage bounds a message (reassembled or not): far above any
	// payload of a scenario, low enough that a corrupt length cannot make
	// a worker hold gigabytes.
	maxMessage = 16 << 20
	// maxControl is the largest payload of a control frame (§5.5).
	maxControl = 125
	// acceptGUID is appended to the key to compute Sec-WebSocket-Accept (§4.2.2).
	acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
)

// Errors of a connection.
var (
	errClosedByServer = errors.New("load: close frame from the server")
	errConnClosed     = errors.New("load: connection closed")
)

// conn is one client WebSocket connection. Its socket is out of Go's
// poller (see dupSocket): a loop reads it, and a write waits for room in
// poll(2).
type conn struct {
	id     int         // static: the connection's number in the run
	fd     int         // static: the socket, non-blocking; closed by close
	ending atomic.Bool // close has begun

	wmu    sync.Mutex // one writer at a time: requests, pongs
	wbuf   []byte     // owned by wmu: the frame being written
	closed bool       // owned by wmu: fd is closed, its number may be another socket's

	// Owned by the reader: the handshake, then the loop the connection is
	// handed to.
	in     []byte // bytes of a frame not yet complete
	msg    []byte // fragments of the message being reassembled
	fragOp byte   // opcode of that message; 0 when none is
}

// dupSocket returns a duplicate of nc's descriptor. Once nc is closed, the
// socket is out of Go's poller. Left in, it made every message arriving
// cost the sender (the server measured) one more epoll wake-up, and the
// client a runtime poll that finds nobody waiting. The duplicate stays
// non-blocking: the flag belongs to the socket, not to a descriptor.
func dupSocket(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("dup: %T has no descriptor", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	if derr != nil {
		return -1, fmt.Errorf("dup: %w", derr)
	}
	return fd, nil
}

// close ends the socket. The shutdown wakes a writer waiting for room, so
// that wmu comes free at once; the close itself happens under wmu, so that
// no write can reach a new socket given the same number.
func (c *conn) close() {
	if c.ending.Swap(true) {
		return
	}
	_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.closed = true
	_ = unix.Close(c.fd)
}

// write sends payload as one masked frame (§5.3: every client frame is),
// blocking until it is written or the write deadline has passed.
func (c *conn) write(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return errConnClosed
	}
	b := append(c.wbuf[:0], 0x80|op) // FIN: the tool never fragments
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xFFFF:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range b[start:] {
		b[start+i] ^= key[i&3]
	}
	c.wbuf = b
	deadline := time.Now().Add(writeWait)
	for len(b) > 0 {
		n, err := unix.Write(c.fd, b)
		switch {
		case err == nil:
			b = b[n:]
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			wait := time.Until(deadline)
			if wait <= 0 {
				return fmt.Errorf("write: %w", os.ErrDeadlineExceeded)
			}
			pfd := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
			if _, err := unix.Poll(pfd, int(wait/time.Millisecond)+1); err != nil && err != unix.EINTR {
				return fmt.Errorf("write: poll: %w", err)
			}
		default:
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

// feed parses data, the bytes of one read, after those an earlier call
// kept, and calls fn with each complete text or binary message
// (reassembled from its fragments); msg is valid only during the call.
// When fn returns false, feed stops there and keeps the rest for the next
// call (the handshake hands later messages to the event loop that way).
// Pings are answered with pongs. A close frame, a malformed or oversized
// frame, or a failed pong ends the connection: feed returns the error.
func (c *conn) feed(data []byte, fn func(msg []byte) bool) error {
	if len(c.in) > 0 {
		c.in = append(c.in, data...)
		data = c.in
	}
	rest, err := c.parse(data, fn)
	if err != nil {
		return err
	}
	// Keep the rest: it may alias the loop's buffer, which the next read
	// overwrites, or c.in itself (append copies with memmove).
	c.in = append(c.in[:0], rest...)
	if len(c.in) == 0 && cap(c.in) > 64<<10 {
		c.in = nil // a big message has gone: do not hold its buffer per connection
	}
	return nil
}

// parse consumes the complete frames of b and returns what is left.
func (c *conn) parse(b []byte, fn func(msg []byte) bool) ([]byte, error) {
	for len(b) >= 2 {
		b0, b1 := b[0], b[1]
		if b1&0x80 != 0 {
			return nil, errors.New("load: masked frame from the server")
		}
		if b0&0x70 != 0 {
			return nil, fmt.Errorf("load: frame with reserved bits %#x (no extension was negotiated)", b0&0x70)
		}
		fin, op := b0&0x80 != 0, b0&0x0F
		size, head := uint64(b1&0x7F), 2
		switch size {
		case 126:
			if len(b) < 4 {
				return b, nil
			}
			size, head = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return b, nil
			}
			size, head = binary.BigEndian.Uint64(b[2:]), 10
		}
		if size > maxMessage || (op == opContinuation && uint64(len(c.msg))+size > maxMessage) {
			return nil, fmt.Errorf("load: frame of %d bytes, more than %d", size, maxMessage)
		}
		if op >= opClose && (!fin || size > maxControl) {
			return nil, fmt.Errorf("load: control frame %#x fragmented or of %d bytes", op, size)
		}
		if uint64(len(b)-head) < size {
			return b, nil
		}
		payload := b[head : head+int(size)]
		b = b[head+int(size):]
		switch op {
		case opText, opBinary:
			if c.fragOp != 0 {
				return nil, errors.New("load: new message inside a fragmented one")
			}
			if !fin {
				c.fragOp = op
				c.msg = append(c.msg[:0], payload...)
				continue
			}
			if !fn(payload) {
				return b, nil
			}
		case opContinuation:
			if c.fragOp == 0 {
				return nil, errors.New("load: continuation frame outside a message")
			}
			c.msg = append(c.msg, payload...)
			if !fin {
				continue
			}
			c.fragOp = 0
			more := fn(c.msg)
			c.msg = c.msg[:0]
			if !more {
				return b, nil
			}
		case opPing:
			if err := c.write(opPong, payload); err != nil {
				return nil, fmt.Errorf("load: pong: %w", err)
			}
		case opPong:
		case opClose:
			if len(payload) >= 2 {
				return nil, fmt.Errorf("%w: %d %q", errClosedByServer, binary.BigEndian.Uint16(payload), payload[2:])
			}
			return nil, errClosedByServer
		default:
			return nil, fmt.Errorf("load: unknown opcode %#x", op)
		}
	}
	return b, nil
}

// upgrade performs the client's opening handshake (§4.1) on nc, within
// nc's deadlines, and returns the bytes that came after the server's
// response: the start of its frames.
func upgrade(nc net.Conn, u *url.URL, hdr http.Header) ([]byte, error) {
	var k [16]byte
	binary.LittleEndian.PutUint64(k[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(k[8:], rand.Uint64())
	key := base64.StdEncoding.EncodeToString(k[:])

	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", u.RequestURI(), u.Host, key)
	if err := hdr.Write(&req); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	req.WriteString("\r\n")
	if _, err := nc.Write(req.Bytes()); err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}

	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	_ = resp.Body.Close() // a 101 has none: this only releases it
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("upgrade: HTTP %d", resp.StatusCode)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		return nil, fmt.Errorf("upgrade: Upgrade %q", resp.Header.Get("Upgrade"))
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(key); got != want {
		return nil, fmt.Errorf("upgrade: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	// The server may have sent its first frames with the response.
	rest, _ := br.Peek(br.Buffered())
	return rest, nil
}

// acceptKey is the Sec-WebSocket-Accept that answers key.
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}
