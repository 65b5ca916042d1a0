package wsconn

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sync"
)

// permessage-deflate (RFC 7692) framing. The server never takes context
// over (server_no_context_takeover): each message is compressed on its own,
// so one compressed frame serves every connection that negotiated the
// extension and no connection holds compressor state.

const (
	rsv1 = 0x40 // the compressed-message bit of RFC 7692 §6

	// DeflateThreshold is the smallest payload sent compressed. Below it
	// the deflate block header and Huffman codes eat the gain: realistic
	// JSON breaks even near 90 bytes and a 96-byte chat message saves 5
	// bytes, while 128 bytes save about 18 % and 256 bytes 44 % (see
	// TestDeflateThresholdPays). Each compressed message also costs the
	// edge a compression and the browser an inflate, so the threshold sits
	// where the gain is clear.
	DeflateThreshold = 128

	// deflateLevel trades compression for CPU. BestSpeed: the levels above
	// it clear 640 KiB of hash chains on every Reset, which costs more than
	// compressing a small message, for little gain on JSON (2 KiB of
	// realistic JSON: 21 % of its size at level 1, 19 % at level 5; see
	// BenchmarkDeflatedTextFrame).
	deflateLevel = flate.BestSpeed

	// sharedDeflateLevel compresses a message that may reach sharedReach
	// connections or more on the edge: its compression is paid once and
	// its bytes on every socket, so the slower level pays (2 KiB of
	// application-like JSON: 45 % of its size at level 1, 43 % at level 5,
	// for 8–17 µs more per message; above 5 nothing is gained).
	sharedDeflateLevel = 5

	// sharedReach is the number of connections from which a message counts
	// as shared: the extra compression then costs each of them at most
	// about 2 µs.
	sharedReach = 8

	// minWindowBits is the smallest window kept for a context-taking
	// client: zlib compresses with 9 bits when asked for 8.
	minWindowBits = 9

	// maxHeader is the longest server frame header (RFC 6455 §5.2).
	maxHeader = 10
)

// deflateTail ends every compressed message (RFC 7692 §7.2.1): the sender
// strips it, the receiver appends it again. deflateEnd adds an empty final
// block, so that the inflater reports io.EOF at the message's end.
var (
	deflateTail = []byte{0x00, 0x00, 0xff, 0xff}
	deflateEnd  = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}
)

// appendWriter is what a pooled compressor writes into.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

type compressor struct {
	fw  *flate.Writer
	out appendWriter
}

// compressors are pooled, one pool per level: a flate.Writer holds about
// 1 MiB of tables, used only while one message is compressed.
var (
	compressors       = compressorPool(deflateLevel)
	sharedCompressors = compressorPool(sharedDeflateLevel)
)

func compressorPool(level int) *sync.Pool {
	return &sync.Pool{New: func() any {
		c := &compressor{}
		fw, err := flate.NewWriter(&c.out, level)
		if err != nil {
			panic(err) // only for a bad level, a constant
		}
		c.fw = fw
		return c
	}}
}

// DeflatedTextFrame returns payload compressed as one server text frame
// with RSV1 set, ready to be written to any number of connections that
// negotiated permessage-deflate; shared compresses harder, for a frame
// that many connections will share.
func DeflatedTextFrame(payload []byte, shared bool) []byte {
	pool := compressors
	if shared {
		pool = sharedCompressors
	}
	c := pool.Get().(*compressor)
	defer pool.Put(c)
	// The compressed bytes go after room for the longest header, which is
	// then written just before them: one buffer, no copy.
	c.out.b = make([]byte, maxHeader, maxHeader+len(payload)/2+64)
	c.fw.Reset(&c.out)
	// Writes into an appendWriter do not fail.
	_, _ = c.fw.Write(payload)
	_ = c.fw.Flush()
	b := c.out.b
	c.out.b = nil
	b = bytes.TrimSuffix(b, deflateTail) // Flush ends with an empty stored block: its tail
	n := len(b) - maxHeader
	hdr := appendHeader(make([]byte, 0, maxHeader), opText, n)
	hdr[0] |= rsv1
	start := maxHeader - len(hdr)
	copy(b[start:], hdr)
	return b[start:]
}

// Outbound is one text message for many connections. It builds the plain
// frame and the compressed one each at most once, and only when a
// connection needs it: a message that no compressing connection receives
// costs no compression.
type Outbound struct {
	payload  []byte
	plain    []byte
	deflated []byte
	deflates int  // times the compressed frame was built: 0 or 1
	shared   bool // may reach sharedReach connections or more
}

// NewOutbound prepares payload for delivery; payload must not change while
// the Outbound is in use.
func NewOutbound(payload []byte) Outbound { return Outbound{payload: payload} }

// MayReach tells o how many connections it may be queued for, before the
// first: a message shared by many is compressed harder.
func (o *Outbound) MayReach(n int) { o.shared = n >= sharedReach }

// FrameFor returns the frame for c: the compressed one when c negotiated
// permessage-deflate and the payload is worth compressing, else the plain one.
func (o *Outbound) FrameFor(c *Conn) []byte {
	if c.deflate && len(o.payload) >= DeflateThreshold {
		if o.deflated == nil {
			o.deflated = DeflatedTextFrame(o.payload, o.shared)
			o.deflates++
		}
		return o.deflated
	}
	if o.plain == nil {
		o.plain = TextFrame(o.payload)
	}
	return o.plain
}

// Deflates is how many times the compressed frame was built (at most
// once); counted so that a test of the hub can tell.
func (o *Outbound) Deflates() int { return o.deflates }

// inflater inflates one client's compressed messages. Its flate reader
// comes from a pool for each message; the window of earlier messages is
// kept only for a client that takes its context over, and holds no more
// than that client has sent compressed (at most windowSize bytes).
type inflater struct {
	keepBytes int    // static: window bytes kept between messages; 0 when the client does not take context over
	window    []byte // the last inflated bytes, the next message's dictionary
}

// decompressor is a pooled flate reader with its source: about 40 KiB
// (deflate's window and tables), held only while one message is inflated.
type decompressor struct {
	fr  io.ReadCloser // a flate.Resetter
	src inflateSource
}

var decompressors sync.Pool

// inflateSource reads a compressed message, then deflateEnd. It is an
// io.ByteReader: flate would wrap any other reader in a 4 KiB bufio.Reader.
type inflateSource struct {
	p     []byte
	ended bool // p is deflateEnd's rest
}

func (s *inflateSource) next() bool {
	if len(s.p) == 0 && !s.ended {
		s.p, s.ended = deflateEnd, true
	}
	return len(s.p) > 0
}

func (s *inflateSource) Read(b []byte) (int, error) {
	if !s.next() {
		return 0, io.EOF
	}
	n := copy(b, s.p)
	s.p = s.p[n:]
	return n, nil
}

func (s *inflateSource) ReadByte() (byte, error) {
	if !s.next() {
		return 0, io.EOF
	}
	c := s.p[0]
	s.p = s.p[1:]
	return c, nil
}

// inflate returns the message compressed in p (without its tail), refusing
// one that inflates to more than limit bytes.
func (f *inflater) inflate(p []byte, limit int) ([]byte, error) {
	d, _ := decompressors.Get().(*decompressor)
	if d == nil {
		d = &decompressor{}
	}
	d.src = inflateSource{p: p}
	if d.fr == nil {
		d.fr = flate.NewReaderDict(&d.src, f.window)
	} else if err := d.fr.(flate.Resetter).Reset(&d.src, f.window); err != nil {
		return nil, fmt.Errorf("%w: inflate: %v", ErrProtocol, err)
	}
	out, err := io.ReadAll(io.LimitReader(d.fr, int64(limit)+1))
	d.src = inflateSource{} // the pool must not keep the read buffer reachable
	decompressors.Put(d)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: inflate: %v", ErrProtocol, err)
	case len(out) > limit:
		return nil, ErrTooLarge
	}
	if f.keepBytes > 0 {
		f.keep(out)
	}
	return out, nil
}

// keep appends out to the window, which keeps only its last keepBytes
// bytes; its array never grows past keepBytes.
func (f *inflater) keep(out []byte) {
	if f.window == nil {
		f.window = make([]byte, 0, min(f.keepBytes, max(len(out), 256)))
	}
	if len(out) >= f.keepBytes {
		out = out[len(out)-f.keepBytes:]
	}
	if over := len(f.window) + len(out) - f.keepBytes; over > 0 {
		f.window = f.window[:copy(f.window, f.window[over:])]
	}
	if len(f.window)+len(out) > cap(f.window) {
		grown := make([]byte, len(f.window), min(f.keepBytes, 2*(len(f.window)+len(out))))
		copy(grown, f.window)
		f.window = grown
	}
	f.window = append(f.window, out...)
}
