package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/bench/internal/proto"
)

// Client modes of a worker: how it reads its connections.
const (
	// ClientEpoll reads every connection from a few event loops (poll.go):
	// the tool's own client, cheap enough to share the cores with servers.
	ClientEpoll = "epoll"
	// ClientGorilla reads each connection in its own goroutine with
	// github.com/gorilla/websocket, as most Go applications do: the
	// runtime's poller wakes one goroutine per message, which changes when
	// and in which order the server's writes are read.
	ClientGorilla = "gorilla"
)

// checkClient returns the client mode named, epoll when empty.
func checkClient(name string) (string, error) {
	switch name {
	case "", ClientEpoll:
		return ClientEpoll, nil
	case ClientGorilla:
		return ClientGorilla, nil
	}
	return "", fmt.Errorf("load: unknown client %q (epoll or gorilla)", name)
}

// msgWriter writes one frame of a connection, whichever client reads it.
type msgWriter interface {
	write(op byte, payload []byte) error
}

// gconn is a connection of the gorilla client.
type gconn struct {
	id  int
	ws  *websocket.Conn
	wmu sync.Mutex // gorilla allows one writer at a time
}

func (g *gconn) write(op byte, payload []byte) error {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	_ = g.ws.SetWriteDeadline(time.Now().Add(writeWait))
	return g.ws.WriteMessage(int(op), payload)
}

// gorillaSet is a worker's gorilla connections and their reader goroutines.
type gorillaSet struct {
	mu      sync.Mutex
	conns   map[*gconn]struct{} // owned by mu
	closed  bool                // owned by mu: add refuses
	readers sync.WaitGroup
}

// add registers g and starts its reader, unless the set is closed.
func (s *gorillaSet) add(g *gconn, read func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = map[*gconn]struct{}{}
	}
	s.conns[g] = struct{}{}
	s.readers.Go(func() {
		read()
		s.mu.Lock()
		delete(s.conns, g)
		s.mu.Unlock()
	})
	return true
}

// close ends every connection and waits for the readers.
func (s *gorillaSet) close() {
	s.mu.Lock()
	s.closed = true
	for g := range s.conns {
		_ = g.ws.Close()
	}
	s.mu.Unlock()
	s.readers.Wait()
}

// serveGorilla opens connection i with gorilla/websocket and reads it in a
// goroutine of its own until it ends; ready is called once it is open or
// has failed.
func (w *Worker) serveGorilla(i int, ready func()) {
	defer w.opening.Done()
	g, err := w.openGorilla(i)
	if err != nil {
		w.failed.Add(1)
		w.sample(fmt.Errorf("conn %d: %w", i, err))
		ready()
		return
	}
	w.opened.Add(1)
	w.connected.Add(1)
	if !w.gorilla.add(g, func() { w.readGorilla(g) }) {
		_ = g.ws.Close()
		w.connected.Add(-1)
		ready()
		return
	}
	if i%w.job.Tabs == 0 {
		w.mu.Lock()
		w.senders = append(w.senders, g)
		w.mu.Unlock()
	}
	ready()
}

// openGorilla dials connection i and waits for the gateway's acceptance;
// messages after it are left for the reader.
func (w *Worker) openGorilla(i int) (*gconn, error) {
	token, err := w.framer.Token(w.job.Secret, User(i, w.job.Tabs), time.Now().Add(tokenLifetime))
	if err != nil {
		return nil, err
	}
	raw, hdr := w.framer.Dial(w.job.URLs[w.edgeOf(i)], token)
	nd := w.dialer(i)
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{c, &w.wireBytes}, nil
		},
		HandshakeTimeout:  handshakeTimeout,
		EnableCompression: w.job.Compress,
	}
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout+handshakeTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, raw, hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("handshake: %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	g := &gconn{id: i, ws: ws}
	if hello := w.framer.Hello(token); hello != nil {
		if err := g.write(opText, hello); err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
	}
	_ = ws.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var accepted bool
	var refusal []byte
	for !accepted && refusal == nil {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		w.framer.Decode(msg, func(m proto.Msg) {
			switch m.Kind {
			case proto.KindAuthOK:
				accepted = true
			case proto.KindError:
				refusal = append(refusal, m.Body...)
			}
		})
	}
	if refusal != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("handshake refused: %s", refusal)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return g, nil
}

// readGorilla reads g until it ends, counting its messages as the event
// loops do. gorilla answers the server's pings itself.
func (w *Worker) readGorilla(g *gconn) {
	r := newReceiver(w)
	r.out = g
	for {
		_, msg, err := g.ws.ReadMessage()
		if err != nil {
			_ = g.ws.Close()
			w.connected.Add(-1)
			if !w.closing.Load() {
				w.dropped.Add(1)
				if !errors.Is(err, net.ErrClosed) {
					w.sample(fmt.Errorf("conn %d dropped: %w", g.id, err))
				}
			}
			return
		}
		r.now = time.Now().UnixNano()
		r.message(msg)
	}
}

// countingConn counts the bytes read from a socket into n.
type countingConn struct {
	net.Conn
	n *atomic.Uint64
}

func (c countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(uint64(k))
	return k, err
}
