package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/bench/internal/proto"
)

// Timing of a client.
const (
	clientTick    = 10 * time.Millisecond
	writeWait     = 5 * time.Second
	dialTimeout   = 5 * time.Second
	authTimeout   = 10 * time.Second
	reconnectWait = 200 * time.Millisecond
	tokenLifetime = 24 * time.Hour
	// maxInFlight bounds a client's unacknowledged actions, below the
	// edge's 64 per connection.
	maxInFlight = 48
	// nackRetry is how soon an action answered Server/ack:error is sent again.
	nackRetry = 500 * time.Millisecond
)

// counters are the clients' totals.
type counters struct {
	sent, resent, acked, dupAcks, nacks, reconnects, dialFails atomic.Uint64
}

// client sends its share of the actions as reliable frames, keeps each in
// its outbox until the edge acknowledges it and, like the JS client's
// outbox, sends every unacknowledged action again with the same id after a
// reconnect (and after resendAfter without an answer).
type client struct {
	n, clients  int      // static: it sends actions n, n+clients, …
	actions     int      // static: how many the run sends
	user, token string   // static
	urls        []string // static: the edges
	rate        float64  // static: actions per second
	resendAfter time.Duration
	c           *counters

	// Owned by run's goroutine.
	edge   int
	next   int               // the next number to send for the first time
	outbox map[int]time.Time // unacknowledged numbers, and when last sent
}

// event is what a connection's reader reports.
type event struct {
	ack  int // number acknowledged (or refused, nack)
	nack bool
	dup  bool
}

// run sends until every action of the client is acknowledged or ctx ends.
func (cl *client) run(ctx context.Context) error {
	cl.outbox = map[int]time.Time{}
	cl.next = cl.n
	start := time.Now()
	ticker := time.NewTicker(clientTick)
	defer ticker.Stop()
	for first := true; ; first = false {
		if cl.next >= cl.actions && len(cl.outbox) == 0 {
			return nil
		}
		c, err := cl.connect(ctx, first)
		if err != nil {
			return err
		}
		err = cl.serve(ctx, c.ws, c.events, c.gone, ticker, start)
		c.close()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cl.c.reconnects.Add(1)
	}
}

// serve sends and resends on ws until the client is done (nil) or the
// connection ends (its error).
func (cl *client) serve(ctx context.Context, ws *websocket.Conn, events <-chan event, gone <-chan error, ticker *time.Ticker, start time.Time) error {
	// After a reconnect every unacknowledged action goes again, in order.
	pending := slices.Sorted(func(yield func(int) bool) {
		for n := range cl.outbox {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range pending {
		if err := cl.send(ws, n); err != nil {
			return err
		}
		cl.c.resent.Add(1)
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-gone:
			return err
		case ev := <-events:
			if _, ok := cl.outbox[ev.ack]; !ok {
				continue // a duplicate answer to a resend
			}
			if ev.nack {
				cl.c.nacks.Add(1)
				cl.outbox[ev.ack] = time.Now().Add(nackRetry - cl.resendAfter)
				continue
			}
			delete(cl.outbox, ev.ack)
			cl.c.acked.Add(1)
			if ev.dup {
				cl.c.dupAcks.Add(1)
			}
			if cl.next >= cl.actions && len(cl.outbox) == 0 {
				return nil
			}
		case now := <-ticker.C:
			due := int(cl.rate * now.Sub(start).Seconds())
			for sent := (cl.next - cl.n) / cl.clients; sent < due && cl.next < cl.actions && len(cl.outbox) < maxInFlight; sent++ {
				if err := cl.send(ws, cl.next); err != nil {
					cl.outbox[cl.next] = now
					cl.next += cl.clients
					cl.c.sent.Add(1)
					return err
				}
				cl.next += cl.clients
				cl.c.sent.Add(1)
			}
			for n, at := range cl.outbox {
				if now.Sub(at) >= cl.resendAfter {
					if err := cl.send(ws, n); err != nil {
						return err
					}
					cl.c.resent.Add(1)
				}
			}
		}
	}
}

// send writes action n and notes it in the outbox.
func (cl *client) send(ws *websocket.Conn, n int) error {
	cl.outbox[n] = time.Now()
	id := strconv.Itoa(n)
	frame := proto.AppendWsgateReliable(nil, "count", uint64(n), []byte(id), []byte(`{"n":`+id+`}`))
	_ = ws.SetWriteDeadline(time.Now().Add(writeWait))
	return ws.WriteMessage(websocket.TextMessage, frame)
}

// connect dials an edge until one accepts: the one the client was on
// first, the next one after a connection ended (as a load balancer would
// send it elsewhere while its edge restarts). The reader reports answers
// on events and its end on gone.
func (cl *client) connect(ctx context.Context, first bool) (*conn, error) {
	if !first {
		cl.edge = (cl.edge + 1) % len(cl.urls)
	}
	for {
		c, err := cl.dial(ctx, cl.urls[cl.edge])
		if err == nil {
			return c, nil
		}
		cl.c.dialFails.Add(1)
		cl.edge = (cl.edge + 1) % len(cl.urls)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(reconnectWait):
		}
	}
}

// conn is one connection and its reader.
type conn struct {
	ws     *websocket.Conn
	events chan event    // the reader's answers
	gone   chan error    // the reader's end (buffered)
	done   chan struct{} // closed by close: the reader stops reporting
	ended  chan struct{} // closed when the reader has returned
}

// close ends the connection and waits for its reader.
func (c *conn) close() {
	close(c.done)
	c.ws.Close()
	<-c.ended
}

var errRefused = errors.New("inboundrun: authentication refused")

func (cl *client) dial(ctx context.Context, url string) (*conn, error) {
	d := websocket.Dialer{HandshakeTimeout: dialTimeout}
	ws, resp, err := d.DialContext(ctx, url, http.Header{"Authorization": {"Bearer " + cl.token}})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	// Wait for the gateway's acceptance before sending.
	_ = ws.SetReadDeadline(time.Now().Add(authTimeout))
	for accepted := false; !accepted; {
		_, data, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, err
		}
		var refused bool
		proto.Wsgate{}.Decode(data, func(m proto.Msg) {
			accepted = accepted || m.Kind == proto.KindAuthOK
			refused = refused || m.Kind == proto.KindError
		})
		if refused {
			ws.Close()
			return nil, errRefused
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	c := &conn{ws: ws, events: make(chan event, maxInFlight*4), gone: make(chan error, 1),
		done: make(chan struct{}), ended: make(chan struct{})}
	go c.read() // owned by c: close stops it and waits
	return c, nil
}

// read reports the acknowledgements of the connection until it ends.
func (c *conn) read() {
	defer close(c.ended)
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.gone <- err
			return
		}
		var evs []event
		proto.Wsgate{}.Decode(data, func(m proto.Msg) {
			switch m.Kind {
			case proto.KindAck:
				if a, ok := proto.ParseAck(m.Body); ok {
					if n, err := strconv.Atoi(string(a.ID)); err == nil {
						evs = append(evs, event{ack: n, dup: a.Duplicate})
					}
				}
			case proto.KindError:
				if n, ok := nackNumber(m.Body); ok {
					evs = append(evs, event{ack: n, nack: true})
				}
			}
		})
		for _, ev := range evs {
			select {
			case c.events <- ev:
			case <-c.done:
				return
			}
		}
	}
}

// nackNumber reads the id of a Server/ack:error body, [code, "msg"],"<id>"].
func nackNumber(body []byte) (int, bool) {
	body = bytes.TrimSuffix(body, []byte(`"]`))
	i := bytes.LastIndex(body, []byte(`,"`))
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(body[i+2:]))
	return n, err == nil
}
