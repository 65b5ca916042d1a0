// Package wsconn is the framing of one WebSocket connection, both ways.
//
// Reading (reader.go): a Reader takes the client's frames off the socket
// without waiting, unmasks and checks them (RFC 6455: control frames,
// fragments, the size limit, and UTF-8 of text as it arrives) and hands over
// whole messages; its owner waits for the socket with a poller. Writing
// (wsconn.go, frame.go): a Conn is a bounded queue of ready-made frames,
// written to the socket without blocking by whoever queued them, and by a
// writer goroutine only while the peer's socket is full. An idle connection
// costs no goroutine, no read buffer and no write buffer, and a frame built
// once is shared by every connection it goes to.
package wsconn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wsgate/wsgate/api/wire"
)

// Timing of writes and closes.
const (
	// WriteWait bounds every blocking socket write; a peer that does not
	// take a frame in this time is dropped.
	WriteWait = 10 * time.Second
	// CloseGrace is how long the peer has to answer our close frame before
	// the socket is torn down.
	CloseGrace = 2 * time.Second
	// maxIovecs bounds the frames of one writev (the kernel's IOV_MAX).
	maxIovecs = 1024
)

// ErrClosed is returned by Send after the connection started closing.
var ErrClosed = errors.New("wsconn: connection is closing")

// ErrQueueFull is returned by Send when the queue is full; the connection is
// then being closed with CloseSlowConsumer.
var ErrQueueFull = errors.New("wsconn: send queue is full")

// errClosedByUs ends the writing after the close frame went out.
var errClosedByUs = errors.New("wsconn: close frame sent")

// IsClosedByUs reports whether err is the writer's normal end after a close.
func IsClosedByUs(err error) bool { return errors.Is(err, errClosedByUs) }

type kind uint8

const (
	kindOwn      kind = iota // the edge's own text frame
	kindDelivery             // a message from NATS: its latency is recorded
	kindControl              // ping or pong: not counted as a frame
	kindClose                // the close frame: nothing is written after it
)

type item struct {
	b    []byte // the frame, or what is left of it after a partial write
	at   int64  // unix nanoseconds of its arrival from NATS (deliveries)
	kind kind
}

// Stats is told what the writers did; one is shared by all connections.
type Stats interface {
	Wrote(frames, bytes int)
	Latency(time.Duration)
}

// Conn is the send side of a WebSocket. Every method may be called from any
// goroutine; none blocks on the socket.
type Conn struct {
	nc       net.Conn           // static after construction
	rc       syscall.RawConn    // static: nc's descriptor; nil when nc has none (then writes go through a goroutine)
	maxQueue int                // static after construction
	stats    Stats              // static after construction
	onError  func(error)        // static; told when writing ends with an error or after the close frame (may be nil)
	writeFn  func(uintptr) bool // static: tryWrite, bound once (a closure per call would allocate)
	deflate  bool               // static once shared: the peer negotiated permessage-deflate (see SetDeflate)

	// Owned by whoever holds the right to write: writeNow's frames and result.
	writing []item
	n       int
	werr    error

	lastSeen atomic.Int64 // unix nanoseconds of the last frame or pong read

	mu        sync.Mutex
	queue     []item        // owned by mu: frames not written yet, in order
	spare     []item        // owned by mu: the previous batch's array, reused
	flushing  bool          // owned by mu: someone holds the right to write (a flusher or the writer goroutine)
	closing   bool          // owned by mu: a close frame is queued; nothing more is accepted
	aborted   bool          // owned by mu: the socket is torn down; no writer may start
	stopped   bool          // owned by mu: writing ended for good (the close frame is out, or a write failed)
	closeCode int           // owned by mu: the code of that close frame
	idle      chan struct{} // owned by mu: made by Linger, closed when writing stops
	writers   sync.WaitGroup
}

// New wraps nc, a server-side WebSocket's network connection, with a send
// queue of at most maxQueue frames. onError is called once writing stops for
// good: with an error wrapping errClosedByUs after the close frame, or with
// the write error.
func New(nc net.Conn, maxQueue int, stats Stats, onError func(error)) *Conn {
	c := &Conn{nc: nc, maxQueue: maxQueue, stats: stats, onError: onError}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.rc = rc
			c.writeFn = c.tryWrite
		}
	}
	c.Touch()
	return c
}

// SetDeflate records that the peer negotiated permessage-deflate, so that
// Outbound.FrameFor gives it compressed frames. It is called before the
// connection is shared with anyone who sends to it.
func (c *Conn) SetDeflate() { c.deflate = true }

// Deflate reports whether the peer negotiated permessage-deflate.
func (c *Conn) Deflate() bool { return c.deflate }

// Touch records that the peer showed a sign of life.
func (c *Conn) Touch() { c.lastSeen.Store(time.Now().UnixNano()) }

// LastSeen is when the peer last showed a sign of life.
func (c *Conn) LastSeen() time.Time { return time.Unix(0, c.lastSeen.Load()) }

// Send queues one text frame of the edge's own (see TextFrame) and writes
// what it can at once. frame must not be modified afterwards.
func (c *Conn) Send(frame []byte) error { return c.send(item{b: frame, kind: kindOwn}) }

// Pong answers a peer's ping with its application data.
func (c *Conn) Pong(data []byte) error {
	return c.send(item{b: controlFrame(opPong, data), kind: kindControl})
}

func (c *Conn) send(it item) error {
	flush, err := c.push(it)
	if flush {
		c.flush()
	}
	return err
}

// Queue queues a frame that arrived from NATS at at. When nobody is
// writing c, the writing is taken over into b (see Batch), whose Flush
// writes the frame and those queued meanwhile by others, in order. Nothing
// else waits for the socket, so one flusher can serve many connections in
// turn.
func (c *Conn) Queue(b *Batch, frame []byte, at time.Time) error {
	flush, err := c.push(item{b: frame, at: at.UnixNano(), kind: kindDelivery})
	if flush {
		b.hold(c)
	}
	return err
}

// Ping queues a protocol ping; the peer's pong proves it alive. A full queue
// skips it rather than counting it against the peer. Like Queue, it may take
// the writing over into b.
func (c *Conn) Ping(b *Batch) {
	c.mu.Lock()
	flush := !c.closing && len(c.queue) < c.maxQueue && c.enqueueLocked(item{b: pingFrame, kind: kindControl})
	c.mu.Unlock()
	if flush {
		b.hold(c)
	}
}

func (c *Conn) push(it item) (flush bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false, ErrClosed
	}
	if len(c.queue) >= c.maxQueue {
		clear(c.queue)
		c.queue = c.queue[:0]
		flush = c.closeLocked(wire.CloseSlowConsumer, "slow consumer")
		// A writer is likely blocked on a peer that does not read: cut its
		// current write short instead of waiting out WriteWait.
		_ = c.nc.SetWriteDeadline(time.Now().Add(CloseGrace))
		return flush, ErrQueueFull
	}
	return c.enqueueLocked(it), nil
}

// Close queues a close frame after the frames already queued and writes what
// it can at once; nothing is accepted after it. The peer has CloseGrace to
// answer before the read deadline expires. Only the first Close counts; it
// reports whether this call was it.
func (c *Conn) Close(code int, reason string) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	flush := c.closeLocked(code, reason)
	c.mu.Unlock()
	if flush {
		c.flush()
	}
	return true
}

// CloseCode is the code of the close frame queued by Close, or 0.
func (c *Conn) CloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

func (c *Conn) closeLocked(code int, reason string) (flush bool) {
	c.closing = true
	c.closeCode = code
	return c.enqueueLocked(item{b: CloseFrame(code, reason), kind: kindClose})
}

// enqueueLocked appends it and reports whether the caller now holds the
// right to write (nobody did).
func (c *Conn) enqueueLocked(it item) bool {
	c.queue = append(c.queue, it)
	if c.flushing {
		return false
	}
	c.flushing = true
	return true
}

// take hands the queued frames to the holder of the right to write, or
// gives that right back when there are none.
func (c *Conn) take() []item {
	c.mu.Lock()
	defer c.mu.Unlock()
	batch := c.queue
	if len(batch) == 0 {
		c.flushing = false
		c.wakeLingerLocked()
		return nil
	}
	if len(batch) > maxIovecs {
		c.queue = append(c.spare[:0], batch[maxIovecs:]...)
		c.spare = nil
		clear(batch[maxIovecs:]) // moved: the array must not keep them reachable
		return batch[:maxIovecs:maxIovecs]
	}
	c.queue, c.spare = c.spare[:0], nil
	return batch
}

// done returns a written batch's array for reuse.
func (c *Conn) done(batch []item) {
	clear(batch)
	c.mu.Lock()
	if cap(batch) > cap(c.spare) {
		c.spare = batch[:0]
	}
	c.mu.Unlock()
}

// flush writes the queued frames without blocking; when the peer's socket is
// full, a writer goroutine takes over the rest. Only the holder of the right
// to write calls it: Send, Pong and Close for themselves, Batch.Flush for
// Queue and Ping.
func (c *Conn) flush() {
	if c.rc == nil {
		c.startWriter(nil)
		return
	}
	for {
		batch := c.take()
		if batch == nil {
			return
		}
		rest, err := c.writeNow(batch)
		switch {
		case err != nil:
			c.fail(err)
			return
		case rest != nil:
			// The frames written are dropped now: the writer returns only
			// rest's part of the array for reuse.
			clear(batch[:len(batch)-len(rest)])
			c.startWriter(rest)
			return
		}
		c.done(batch)
	}
}

// writeNow writes as much of batch as the socket takes now and returns what
// is left (nil when everything went out).
func (c *Conn) writeNow(batch []item) (rest []item, err error) {
	c.writing = batch
	err = c.rc.Write(c.writeFn)
	c.writing = nil
	if err != nil {
		return nil, err
	}
	n, werr := c.n, c.werr
	if werr == unix.EAGAIN {
		n, werr = 0, nil
	}
	if werr != nil {
		return nil, werr
	}
	return c.wrote(batch, n)
}

// tryWrite is writeNow's write, called with the descriptor; it never waits.
func (c *Conn) tryWrite(fd uintptr) bool {
	for {
		c.n, c.werr = writeFrames(int(fd), c.writing)
		if c.werr != unix.EINTR {
			return true
		}
	}
}

// wrote accounts for n bytes of batch written and returns the unwritten
// rest, if any. The close frame ends the writing with errClosedByUs.
func (c *Conn) wrote(batch []item, n int) (rest []item, err error) {
	frames, bytes := 0, n
	var now int64
	defer func() { c.stats.Wrote(frames, bytes) }()
	for i := range batch {
		it := &batch[i]
		if n < len(it.b) {
			it.b = it.b[n:]
			return batch[i:], nil
		}
		n -= len(it.b)
		switch it.kind {
		case kindOwn:
			frames++
		case kindDelivery:
			frames++
			if now == 0 {
				now = time.Now().UnixNano()
			}
			c.stats.Latency(time.Duration(now - it.at))
		case kindClose:
			// The peer answers with its own close frame, which ends the
			// reader; if it does not, the deadline (a parked reader) or the
			// owner's timer (the hub's CloseSent) does.
			_ = c.nc.SetReadDeadline(time.Now().Add(CloseGrace))
			return nil, errClosedByUs
		}
	}
	return nil, nil
}

// startWriter starts the goroutine that writes, blocking, what the socket
// did not take at once; it keeps the right to write until the queue is empty.
func (c *Conn) startWriter(rest []item) {
	c.mu.Lock()
	if c.aborted {
		// The owner is tearing the connection down and may be waiting for
		// its writers already: no new one may start.
		c.flushing = false
		c.mu.Unlock()
		return
	}
	c.writers.Add(1)
	c.mu.Unlock()
	go c.write(rest)
}

// write is the writer goroutine. No lock is held while writing.
func (c *Conn) write(batch []item) {
	defer c.writers.Done()
	for {
		if batch == nil {
			if batch = c.take(); batch == nil {
				break
			}
		}
		if err := c.writeBlocking(batch); err != nil {
			c.fail(err)
			return
		}
		c.done(batch)
		batch = nil
	}
}

func (c *Conn) writeBlocking(batch []item) error {
	if err := c.nc.SetWriteDeadline(time.Now().Add(WriteWait)); err != nil {
		return err
	}
	bufs := make(net.Buffers, len(batch))
	for i := range batch {
		bufs[i] = batch[i].b
	}
	n, err := bufs.WriteTo(c.nc)
	if _, werr := c.wrote(batch, int(n)); werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	// Back to no deadline for the non-blocking writes, which would fail at
	// once on a past one; done while this goroutine still holds the right
	// to write.
	return c.nc.SetWriteDeadline(time.Time{})
}

// fail ends the writing: nothing more is accepted, and the owner is told.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	clear(c.queue)
	c.queue = c.queue[:0]
	c.closing = true
	c.stopped = true
	c.wakeLingerLocked()
	c.mu.Unlock()
	// The right to write is never given back: nobody writes after this.
	if c.onError != nil {
		c.onError(err)
	}
}

// Linger waits, at most d, until everything queued has been written (or
// writing has failed): a close frame queued last, say, is out before the
// owner tears the connection down. Once the close frame is out it returns at
// once: then nothing is left to write (RFC 6455 §7.1.1 has the server close
// the TCP connection right after the closing handshake).
func (c *Conn) Linger(d time.Duration) {
	c.mu.Lock()
	if !c.flushing || c.aborted || c.stopped {
		c.mu.Unlock()
		return
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

func (c *Conn) wakeLingerLocked() {
	if c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

// Abort tears the connection down at once, without a close frame (dead
// peers, failed writes, the owner's final cleanup): both directions are shut
// down, which wakes a reader and a writer wherever they wait; the queue
// takes nothing afterwards and no writer starts. The owner closes the
// socket itself once its reader is done.
func (c *Conn) Abort() {
	c.mu.Lock()
	c.closing = true
	c.aborted = true
	c.mu.Unlock()
	if tc, ok := c.nc.(interface{ CloseRead() error }); ok {
		_ = tc.CloseRead()
		if tw, ok := c.nc.(interface{ CloseWrite() error }); ok {
			_ = tw.CloseWrite()
		}
		return
	}
	_ = c.nc.Close()
}

// Wait waits for the writer goroutine, if any, to finish. The owner calls it
// after Abort, so that no goroutine outlives the connection.
func (c *Conn) Wait() { c.writers.Wait() }

// RemoteIP is the peer's IP address without the port.
func RemoteIP(addr net.Addr) string {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}
