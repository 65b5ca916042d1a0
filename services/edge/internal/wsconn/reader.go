package wsconn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/api/wire"
)

// Opcodes of the frames a client sends (RFC 6455 §5.2).
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// Errors that end reading; the caller answers with the close code named.
var (
	// ErrProtocol: the peer broke RFC 6455 (close 1002).
	ErrProtocol = errors.New("wsconn: protocol violation")
	// ErrTooLarge: a message exceeds the limit (close 1009).
	ErrTooLarge = errors.New("wsconn: message too big")
	// ErrInvalidUTF8: a text message is not valid UTF-8 (close 1007). It
	// is found as soon as the invalid byte arrives, inside a frame or a
	// fragmented message as well (RFC 6455 §8.1).
	ErrInvalidUTF8 = errors.New("wsconn: text is not valid UTF-8")
)

// readBufferSize is the size of the pooled buffers reads go into. A buffer
// is held only while a frame is incomplete: an idle connection holds none.
const readBufferSize = 4096

var readBuffers = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// Message is one complete message or control frame from the peer.
type Message struct {
	Op   byte   // OpText, OpBinary, OpClose, OpPing or OpPong
	Data []byte // its payload; text and binary payloads belong to the caller
}

// Reader reads a client's frames. Fill reads what the socket has, without
// waiting; Next takes messages off what was read, without a system call.
// Its owner waits for the socket elsewhere (a poller), and an idle
// connection holds no buffer: one is taken from a pool for each read and
// kept only while a frame is incomplete. Only one goroutine at a time may
// use a Reader.
type Reader struct {
	rc     syscall.RawConn    // static
	limit  int                // static: largest message accepted
	fillFn func(uintptr) bool // static: tryFill, bound once (a closure per call would allocate)

	n       int   // result of the last tryRead
	rerr    error // result of the last tryRead
	drained bool  // the last Fill left the socket empty

	buf      *[]byte // pooled buffer, or a larger one for a large frame; nil when nothing is pending
	r, w     int     // the unread bytes are (*buf)[r:w]
	need     int     // bytes the incomplete frame at r takes (0: unknown)
	frag     []byte  // a fragmented message so far
	fragOp   byte    // its opcode
	fragging bool
	fragZ    bool      // the fragmented message is compressed
	inflate  *inflater // static once reading: nil unless permessage-deflate was negotiated
	checked  int       // payload bytes of the text frame at r already unmasked and checked
	text     utf8State // the text message so far: how its last rune ends
	err      error     // the end of input (io.EOF or the read error): Next returns it once all before it is taken
	discard  bool      // after a protocol error: input is read and dropped
}

// NewReader reads from nc, which must be a TCP (or Unix) connection,
// accepting messages of at most limit bytes.
func NewReader(nc net.Conn, limit int) (*Reader, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("wsconn: %T has no file descriptor", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("wsconn: %w", err)
	}
	r := &Reader{rc: rc, limit: limit}
	r.fillFn = r.tryFill
	return r, nil
}

// SetDeflate accepts compressed messages (RSV1, RFC 7692) from now on, as
// negotiated in d. Call it before the first Next.
func (r *Reader) SetDeflate(d Deflate) {
	f := &inflater{}
	if d.Takeover {
		f.keepBytes = 1 << max(d.WindowBits, minWindowBits)
	}
	r.inflate = f
}

// Fill reads what the socket has now, without waiting, for Next. It
// reports false when there was nothing (then wait for the socket to become
// readable, e.g. with a poller, and Fill again).
func (r *Reader) Fill() (bool, error) {
	if r.err != nil {
		return true, nil // Next has the end to report
	}
	r.n, r.rerr, r.drained = 0, nil, false
	if err := r.rc.Read(r.fillFn); err != nil {
		return false, err
	}
	switch {
	case r.rerr == unix.EAGAIN:
		r.drained = true
		return false, nil
	case r.rerr != nil:
		r.err = r.rerr
	case r.n == 0:
		r.err = io.EOF
	default:
		// A read that did not fill the room it had took all there was.
		r.drained = r.w+r.n < len(*r.buf)
		r.w += r.n
	}
	return true, nil
}

// Drained reports whether the last Fill took everything the socket had (or
// found it empty). Right after that Fill, a poller armed once Next has taken
// what was read misses nothing (an edge-triggered epoll reports every arrival
// after the event that started the read), so no read to see the socket empty
// is needed. It says nothing about later bytes.
func (r *Reader) Drained() bool { return r.drained }

// tryFill is Fill's read: one attempt, never a wait.
func (r *Reader) tryFill(fd uintptr) bool {
	r.tryRead(fd)
	return true
}

// RawConn is the socket's descriptor access, for a poller.
func (r *Reader) RawConn() syscall.RawConn { return r.rc }

// tryRead reads into the free end of the buffer, called with the
// descriptor; it reports false when there is nothing to read yet.
func (r *Reader) tryRead(fd uintptr) bool {
	if r.buf == nil {
		r.buf = readBuffers.Get().(*[]byte)
		r.r, r.w = 0, 0
	}
	r.reserve(r.need)
	for {
		r.n, r.rerr = unix.Read(int(fd), (*r.buf)[r.w:])
		if r.rerr != unix.EINTR {
			break
		}
	}
	if r.rerr == unix.EAGAIN {
		if r.r == r.w {
			r.release() // hold no buffer while waiting
		}
		return false
	}
	return true
}

// Next returns the next message from what Fill read; ok is false when it
// needs more bytes (then Fill). A protocol violation or a message over the
// limit returns ErrProtocol, ErrTooLarge or ErrInvalidUTF8 once; after it,
// input is dropped until the connection ends. io.EOF means the peer closed the socket.
func (r *Reader) Next() (m Message, ok bool, err error) {
	for {
		if r.discard {
			r.r, r.w = 0, 0
		}
		if r.buf != nil && r.r < r.w {
			m, need, err := r.parse()
			if err != nil {
				r.discard = true
				r.frag, r.checked = nil, 0
				return Message{}, false, err
			}
			if need == 0 {
				r.need = 0
				if m.Op != 0 {
					return m, true, nil
				}
				continue // a fragment: the message goes on
			}
			r.need = need
		}
		if r.buf != nil && r.r == r.w {
			r.release()
		}
		if r.err != nil {
			r.release()
			return Message{}, false, r.err
		}
		return Message{}, false, nil
	}
}

// reserve makes room for need unread bytes, and at least one more byte, in
// the buffer.
func (r *Reader) reserve(need int) {
	b := *r.buf
	need = max(need, r.w-r.r+1)
	if need <= len(b)-r.r {
		return
	}
	if need <= len(b) {
		r.w = copy(b, b[r.r:r.w])
		r.r = 0
		return
	}
	bigger := make([]byte, need)
	n := copy(bigger, b[r.r:r.w])
	r.release()
	r.buf, r.r, r.w = &bigger, 0, n
}

// release gives the buffer back, when it is a pooled one.
func (r *Reader) release() {
	if r.buf != nil && len(*r.buf) == readBufferSize {
		readBuffers.Put(r.buf)
	}
	r.buf, r.r, r.w = nil, 0, 0
}

// parse takes one frame off the buffer. It returns need > 0 (the bytes the
// frame takes from r.r on) when the frame is not complete, and a Message
// with Op 0 for a fragment that does not end a message.
func (r *Reader) parse() (m Message, need int, err error) {
	b := (*r.buf)[r.r:r.w]
	if len(b) < 2 {
		return Message{}, 2, nil
	}
	fin, rsv, op := b[0]&0x80 != 0, b[0]&0x70, b[0]&0x0F
	masked, n := b[1]&0x80 != 0, int64(b[1]&0x7F)
	hdr := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return Message{}, 4, nil
		}
		n, hdr = int64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return Message{}, 10, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return Message{}, 0, fmt.Errorf("%w: bad frame length", ErrProtocol)
		}
		n, hdr = int64(u), 10
	}
	// RSV1 marks a compressed message on its first frame only, and only
	// after negotiation (RFC 7692 §6.1).
	z := rsv == rsv1 && r.inflate != nil && (op == OpText || op == OpBinary)
	switch {
	case rsv != 0 && !z:
		return Message{}, 0, fmt.Errorf("%w: reserved bits set", ErrProtocol)
	case !masked:
		return Message{}, 0, fmt.Errorf("%w: frame not masked", ErrProtocol)
	case op >= OpClose && op <= OpPong:
		if !fin || n > maxControlPayload {
			return Message{}, 0, fmt.Errorf("%w: bad control frame", ErrProtocol)
		}
	case op > OpBinary:
		return Message{}, 0, fmt.Errorf("%w: unknown opcode %d", ErrProtocol, op)
	case op == OpContinuation && !r.fragging:
		return Message{}, 0, fmt.Errorf("%w: continuation without a message", ErrProtocol)
	case op != OpContinuation && r.fragging:
		return Message{}, 0, fmt.Errorf("%w: new message inside a fragmented one", ErrProtocol)
	case int64(len(r.frag))+n > int64(r.limit):
		return Message{}, 0, ErrTooLarge
	}
	total := hdr + 4 + int(n)
	z = z || op == OpContinuation && r.fragZ
	// A compressed text message is checked once inflated.
	text := !z && (op == OpText || op == OpContinuation && r.fragOp == OpText)
	if len(b) < total {
		// A text frame is checked as far as it has come: invalid UTF-8
		// fails the connection before the rest of the frame arrives.
		if text && len(b) > hdr+4 {
			if err := r.checkText(b[hdr:hdr+4], b[hdr+4:], false); err != nil {
				return Message{}, 0, err
			}
		}
		return Message{}, total, nil
	}
	key := b[hdr : hdr+4]
	payload := b[hdr+4 : total]
	if text {
		if err := r.checkText(key, payload, fin); err != nil {
			return Message{}, 0, err
		}
	} else {
		unmask(payload, key, 0)
	}
	r.checked = 0
	r.r += total
	switch {
	case op >= OpClose:
		return Message{Op: op, Data: payload}, 0, nil
	case op != OpContinuation && fin && z:
		return r.inflated(op, payload)
	case op != OpContinuation && fin:
		return Message{Op: op, Data: append([]byte(nil), payload...)}, 0, nil
	case op != OpContinuation:
		r.fragging, r.fragOp, r.fragZ, r.frag = true, op, z, append([]byte(nil), payload...)
		return Message{}, 0, nil
	}
	r.frag = append(r.frag, payload...)
	if !fin {
		return Message{}, 0, nil
	}
	op, data := r.fragOp, r.frag
	r.fragging, r.fragOp, r.fragZ, r.frag = false, 0, false, nil
	if z {
		return r.inflated(op, data)
	}
	return Message{Op: op, Data: data}, 0, nil
}

// inflated returns the compressed message p inflated, within the limit and,
// for text, checked as UTF-8.
func (r *Reader) inflated(op byte, p []byte) (Message, int, error) {
	data, err := r.inflate.inflate(p, r.limit)
	if err != nil {
		return Message{}, 0, err
	}
	if op == OpText && !utf8.Valid(data) {
		return Message{}, 0, ErrInvalidUTF8
	}
	return Message{Op: op, Data: data}, 0, nil
}

// checkText unmasks the payload bytes of a text frame not yet checked
// (those from r.checked on) and checks that the message so far is valid
// UTF-8, or a prefix of it while the message is not complete (last).
func (r *Reader) checkText(key, payload []byte, last bool) error {
	fresh := payload[r.checked:]
	unmask(fresh, key, r.checked)
	r.checked = len(payload)
	var ok bool
	if r.text, ok = r.text.next(fresh); !ok || last && r.text != utf8Complete {
		return ErrInvalidUTF8
	}
	return nil
}

// unmask applies the masking key to p, the payload bytes from offset on.
func unmask(p, key []byte, offset int) {
	for i := range p {
		p[i] ^= key[(offset+i)&3]
	}
}

// ParseClose reads a close frame's payload: its code (CloseNoStatus when it
// has none) and whether it is well formed (RFC 6455 §5.5.1, §7.4).
func ParseClose(payload []byte) (code int, ok bool) {
	switch {
	case len(payload) == 0:
		return wire.CloseNoStatus, true
	case len(payload) == 1:
		return 0, false
	}
	code = int(binary.BigEndian.Uint16(payload))
	if !utf8.Valid(payload[2:]) {
		return code, false
	}
	switch {
	case code >= 3000 && code <= 4999:
		return code, true
	case code >= 1000 && code <= 1014:
		return code, code != 1004 && code != wire.CloseNoStatus && code != wire.CloseAbnormal
	}
	return code, false
}
