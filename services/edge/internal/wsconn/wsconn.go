// Package wsconn owns the sending side of one WebSocket connection: a bounded
// queue of frames and a writer goroutine that runs only while there is
// something to send, so an idle connection costs no goroutine of its own.
package wsconn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Timing of writes and closes.
const (
	// WriteWait bounds every socket write; a peer that does not take a frame
	// in this time is dropped.
	WriteWait = 10 * time.Second
	// CloseGrace is how long the peer has to answer our close frame before
	// the socket is torn down.
	CloseGrace = 2 * time.Second
)

// Close codes of DESIGN.md §2 used by the edge.
const (
	CloseNormal       = 1000
	CloseGoingAway    = 1001
	ClosePolicy       = 1008
	CloseTooLarge     = 1009
	CloseInternal     = 1011
	CloseRestart      = 1012
	CloseTryLater     = 1013
	CloseTokenExpired = 4001
	CloseAuthFailed   = 4401
	CloseForbidden    = 4403
	CloseAuthTimeout  = 4408
	CloseRateLimited  = 4429
	CloseSlowConsumer = 4500
)

// ErrClosed is returned by Send after the connection started closing.
var ErrClosed = errors.New("wsconn: connection is closing")

// ErrQueueFull is returned by Send when the queue is full; the connection is
// then being closed with CloseSlowConsumer.
var ErrQueueFull = errors.New("wsconn: send queue is full")

type kind uint8

const (
	kindText kind = iota
	kindPrepared
	kindPing
	kindClose
)

type item struct {
	kind kind
	data []byte                     // the frame (also for kindPrepared: its size counts)
	pm   *websocket.PreparedMessage // kindPrepared only
	at   int64                      // unix nanoseconds of its arrival from NATS; 0 for the edge's own frames
}

// Stats is told what the writers did; one is shared by all connections.
type Stats interface {
	Wrote(frames, bytes int)
	Latency(time.Duration)
}

// Conn is the send side of a WebSocket. Send, SendPrepared, Ping and Close
// may be called from any goroutine and never block on the socket.
type Conn struct {
	ws       *websocket.Conn // static after construction
	maxQueue int             // static after construction
	stats    Stats           // static after construction
	onError  func(error)     // static; told of write errors (may be nil)

	lastSeen atomic.Int64 // unix nanoseconds of the last frame or pong read

	mu        sync.Mutex
	queue     []item // owned by mu
	spare     []item // owned by mu: the writer's previous batch, reused
	writing   bool   // owned by mu: a writer goroutine is running
	closing   bool   // owned by mu: a close frame is queued; nothing more is accepted
	closeCode int    // owned by mu: the code of that close frame
	writers   sync.WaitGroup
}

// New wraps ws with a send queue of at most maxQueue frames. onError is
// called (from the writer) when a write fails.
func New(ws *websocket.Conn, maxQueue int, stats Stats, onError func(error)) *Conn {
	c := &Conn{ws: ws, maxQueue: maxQueue, stats: stats, onError: onError}
	c.Touch()
	return c
}

// WS returns the underlying connection, for its reader.
func (c *Conn) WS() *websocket.Conn { return c.ws }

// Touch records that the peer showed a sign of life.
func (c *Conn) Touch() { c.lastSeen.Store(time.Now().UnixNano()) }

// LastSeen is when the peer last showed a sign of life.
func (c *Conn) LastSeen() time.Time { return time.Unix(0, c.lastSeen.Load()) }

// Send queues one text frame of the edge's own. data must not be modified
// afterwards.
func (c *Conn) Send(data []byte) error { return c.push(item{kind: kindText, data: data}) }

// Deliver queues an outbound frame that arrived from NATS at at. pm, when
// not nil, is data prepared once for many connections.
func (c *Conn) Deliver(data []byte, pm *websocket.PreparedMessage, at time.Time) error {
	it := item{kind: kindText, data: data, at: at.UnixNano()}
	if pm != nil {
		it.kind, it.pm = kindPrepared, pm
	}
	return c.push(it)
}

// Ping queues a protocol ping; the peer's pong proves it alive. A full queue
// skips it rather than counting it against the peer.
func (c *Conn) Ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || len(c.queue) >= c.maxQueue {
		return
	}
	c.enqueueLocked(item{kind: kindPing})
}

func (c *Conn) push(it item) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return ErrClosed
	}
	if len(c.queue) >= c.maxQueue {
		c.queue = c.queue[:0]
		c.closeLocked(CloseSlowConsumer, "slow consumer")
		// The writer is likely blocked on a peer that does not read: cut
		// its current write short instead of waiting out WriteWait.
		_ = c.ws.NetConn().SetWriteDeadline(time.Now().Add(CloseGrace))
		return ErrQueueFull
	}
	c.enqueueLocked(it)
	return nil
}

// Close queues a close frame after the frames already queued; nothing is
// accepted after it. The peer has CloseGrace to answer before the reader's
// deadline expires. Only the first Close counts; it reports whether this
// call was it.
func (c *Conn) Close(code int, reason string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.closeLocked(code, reason)
	return true
}

// CloseCode is the code of the close frame queued by Close, or 0.
func (c *Conn) CloseCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

func (c *Conn) closeLocked(code int, reason string) {
	c.closing = true
	c.closeCode = code
	c.enqueueLocked(item{kind: kindClose, data: websocket.FormatCloseMessage(code, reason)})
}

func (c *Conn) enqueueLocked(it item) {
	c.queue = append(c.queue, it)
	if !c.writing {
		c.writing = true
		c.writers.Add(1)
		go c.write()
	}
}

// write is the writer goroutine: it sends batches until the queue is empty,
// then exits. No lock is held while writing to the socket.
func (c *Conn) write() {
	defer c.writers.Done()
	for {
		c.mu.Lock()
		batch := c.queue
		if len(batch) == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()

		err := c.writeBatch(batch)
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
		if err != nil {
			c.queue = c.queue[:0]
			c.closing = true
			c.writing = false
			c.mu.Unlock()
			if c.onError != nil {
				c.onError(err)
			}
			return
		}
		c.mu.Unlock()
	}
}

func (c *Conn) writeBatch(batch []item) error {
	deadline := time.Now().Add(WriteWait)
	if err := c.ws.SetWriteDeadline(deadline); err != nil {
		return err
	}
	frames, bytes := 0, 0
	defer func() { c.stats.Wrote(frames, bytes) }()
	for _, it := range batch {
		var err error
		switch it.kind {
		case kindText:
			err = c.ws.WriteMessage(websocket.TextMessage, it.data)
		case kindPrepared:
			err = c.ws.WritePreparedMessage(it.pm)
		case kindPing:
			err = c.ws.WriteMessage(websocket.PingMessage, nil)
		case kindClose:
			err = c.ws.WriteMessage(websocket.CloseMessage, it.data)
			// The peer answers with its own close frame, which ends the
			// reader; if it does not, the deadline does.
			_ = c.ws.SetReadDeadline(time.Now().Add(CloseGrace))
			if err == nil {
				err = errClosedByUs
			}
		}
		if err != nil {
			return err
		}
		if it.kind == kindText || it.kind == kindPrepared {
			frames++
			bytes += len(it.data)
			if it.at != 0 {
				c.stats.Latency(time.Duration(time.Now().UnixNano() - it.at))
			}
		}
	}
	return nil
}

// errClosedByUs ends the writer after it sent a close frame.
var errClosedByUs = errors.New("wsconn: close frame sent")

// IsClosedByUs reports whether err is the writer's normal end after a close.
func IsClosedByUs(err error) bool { return errors.Is(err, errClosedByUs) }

// Abort tears the socket down at once, without a close frame (dead peers,
// and the owner's final cleanup); the queue takes nothing afterwards.
func (c *Conn) Abort() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
}

// Wait waits for the writer goroutine, if any, to finish. The owner calls it
// after the socket is closed, so that no goroutine outlives the connection.
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
