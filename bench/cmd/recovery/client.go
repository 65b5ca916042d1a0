package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/bench/internal/hist"
)

// Timing of the client side.
const (
	dialTimeout   = 10 * time.Second
	tokenLifetime = 2 * time.Hour
)

// dataAction is the action of the numbered messages the tool publishes.
const dataAction = "r"

// user is one user of a scenario with its one connection: the publisher
// numbers its messages 1, 2, … and the client checks that each number
// arrives exactly once and in order.
type user struct {
	idx   int
	name  string
	token string

	// Publisher side.
	published atomic.Int64 // owned by its publisher: the last number handed to the stream
	stored    atomic.Int64 // the last number the stream acknowledged (all below it are stored)

	// Receiver side, owned by the connection's reader (one at a time);
	// read by others only through the atomics or after the readers ended.
	last     atomic.Int64 // the highest number received
	distinct int64        // numbers received at least once
	seen     []uint64     // bitset of received numbers
	epoch    string       // the stream's epoch, from the last Server/recovery
	seq      uint64       // the sequence of the last stored message received
	live     atomic.Bool  // the connection announced its epoch (it receives live messages)

	// The recovery in progress, owned by the reader.
	endedAt    time.Time // when the previous socket ended (zero: first connection)
	openedAt   time.Time // when the current socket opened
	recovering bool      // a recovery waits to be caught up
	target     int64     // the number to reach to be caught up
	replay     int       // replayed frames still to come
}

func (u *user) markSeen(n int64) (dup bool) {
	w, b := n/64, uint(n%64)
	for int64(len(u.seen)) <= w {
		u.seen = append(u.seen, 0)
	}
	if u.seen[w]&(1<<b) != 0 {
		return true
	}
	u.seen[w] |= 1 << b
	return false
}

// since is the position the next connection asks to recover from, "" when
// the user never learned the epoch.
func (u *user) since() string {
	if u.epoch == "" {
		return ""
	}
	return u.epoch + ":" + strconv.FormatUint(u.seq, 10)
}

// counter counts events by name, from any goroutine.
type counter struct {
	mu sync.Mutex
	n  map[string]int64
}

func (t *counter) add(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == nil {
		t.n = map[string]int64{}
	}
	t.n[name]++
}

// rows are the counter's names and counts as table rows, most frequent first.
func (t *counter) rows(prefix string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := make([]string, 0, len(t.n))
	for name := range t.n {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Or(cmp.Compare(t.n[b], t.n[a]), cmp.Compare(a, b)) })
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "| %s%s | %d |\n", prefix, name, t.n[name])
	}
	return b.String()
}

// endOf names how a socket ended: the close code and reason the edge sent,
// or that it ended without a close frame (a reset, a kill, our own drop).
func endOf(err error) string {
	if ce, ok := errors.AsType[*websocket.CloseError](err); ok {
		return fmt.Sprintf("close %d %q", ce.Code, ce.Text)
	}
	return "no close frame"
}

// metrics are what the connections of a scenario count, from any reader.
type metrics struct {
	live        atomic.Pointer[hist.Hist] // publish to receipt of live messages, µs
	endToRec    *hist.Hist                // socket end → Server/recovery, µs
	endToCaught *hist.Hist                // socket end → caught up, µs
	openToRec   *hist.Hist                // socket open → Server/recovery, µs
	openCaught  *hist.Hist                // socket open → caught up, µs

	reconnects   atomic.Int64 // connections opened with since
	recovered    atomic.Int64 // recovered:true answers to a since
	notRecovered atomic.Int64 // recovered:false answers to a since
	replayed     atomic.Int64 // frames announced by Server/recovery counts
	caught       atomic.Int64 // recoveries that reached their target
	dups         atomic.Int64 // numbers received twice
	outOfOrder   atomic.Int64 // numbers received after a higher one
	seqBack      atomic.Int64 // stored messages whose seq did not increase on a connection
	errFrames    atomic.Int64 // error frames (Client/error, …:error, Server/close)
	dialErrors   atomic.Int64 // failed dials (the edge was down, say)
	ends         counter      // how sockets ended (close code, or no close frame)

	lastCaught atomic.Int64 // unix ns of the last recovery that caught up
}

func newMetrics() *metrics {
	m := &metrics{endToRec: hist.New(), endToCaught: hist.New(), openToRec: hist.New(), openCaught: hist.New()}
	m.live.Store(hist.New())
	return m
}

// dialer opens the connections of a scenario.
type dialer struct {
	ws *websocket.Dialer
}

func newDialer() dialer {
	return dialer{ws: &websocket.Dialer{HandshakeTimeout: dialTimeout, ReadBufferSize: 4096, WriteBufferSize: 1024}}
}

// open dials base as u, asking to recover from u's position when it has one.
func (d dialer) open(ctx context.Context, base string, u *user) (*websocket.Conn, error) {
	target := base
	if s := u.since(); s != "" {
		target += "?since=" + url.QueryEscape(s)
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	ws, resp, err := d.ws.DialContext(ctx, target, http.Header{"Authorization": {"Bearer " + u.token}})
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", base, err)
	}
	return ws, nil
}

// begin records that a socket of u opened after the previous one ended at
// ended (zero for the first connection).
func (u *user) begin(ended time.Time, m *metrics) {
	u.openedAt = time.Now()
	u.endedAt = ended
	u.recovering = false
	u.replay = 0
	if u.epoch != "" {
		m.reconnects.Add(1)
	}
	u.live.Store(false)
}

// read handles the frames of one socket of u until it ends.
func (u *user) read(ws *websocket.Conn, m *metrics) {
	defer ws.Close()
	var lastSeq uint64
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			u.live.Store(false)
			m.ends.add(endOf(err))
			return
		}
		now := time.Now()
		var f []json.RawMessage
		if json.Unmarshal(data, &f) != nil || len(f) < 2 {
			m.errFrames.Add(1)
			continue
		}
		var action string
		_ = json.Unmarshal(f[0], &action)
		switch action {
		case dataAction:
			var d [2]int64 // number, send time (unix ns)
			if json.Unmarshal(f[1], &d) != nil {
				m.errFrames.Add(1)
				continue
			}
			if len(f) >= 4 {
				var seq uint64
				if json.Unmarshal(f[3], &seq) == nil {
					if seq <= lastSeq {
						m.seqBack.Add(1)
					}
					lastSeq = seq
					u.seq = max(u.seq, seq)
				}
			}
			u.receive(d[0], d[1], now, m)
		case "Server/recovery":
			var r struct {
				Epoch     string `json:"epoch"`
				Recovered bool   `json:"recovered"`
				Count     int    `json:"count"`
			}
			_ = json.Unmarshal(f[1], &r)
			if u.epoch != "" {
				if r.Recovered {
					m.recovered.Add(1)
				} else {
					m.notRecovered.Add(1)
				}
				m.replayed.Add(int64(r.Count))
				if !u.endedAt.IsZero() {
					m.endToRec.Record(now.Sub(u.endedAt).Microseconds())
				}
				m.openToRec.Record(now.Sub(u.openedAt).Microseconds())
				u.recovering, u.target = true, u.stored.Load()
				u.replay = r.Count
				u.checkCaught(now, m)
			}
			if r.Epoch != "" { // an edge that has not seen the stream yet does not know it
				u.epoch = r.Epoch
			}
			u.live.Store(true)
		case "Client/authentication":
		default:
			m.errFrames.Add(1)
		}
	}
}

// receive checks number n of u, sent at the unix time sent.
func (u *user) receive(n, sent int64, now time.Time, m *metrics) {
	switch {
	case u.markSeen(n):
		m.dups.Add(1)
	case n < u.last.Load():
		m.outOfOrder.Add(1)
		u.distinct++
	default:
		u.distinct++
		u.last.Store(n)
	}
	if u.replay > 0 {
		u.replay--
	} else {
		m.live.Load().Record(now.Sub(time.Unix(0, sent)).Microseconds())
	}
	u.checkCaught(now, m)
}

// checkCaught records the end of a recovery once u received every number
// the stream had stored when the recovery started.
func (u *user) checkCaught(now time.Time, m *metrics) {
	if !u.recovering || u.last.Load() < u.target {
		return
	}
	u.recovering = false
	if !u.endedAt.IsZero() {
		m.endToCaught.Record(now.Sub(u.endedAt).Microseconds())
	}
	m.openCaught.Record(now.Sub(u.openedAt).Microseconds())
	m.caught.Add(1)
	for {
		t := m.lastCaught.Load()
		if now.UnixNano() <= t || m.lastCaught.CompareAndSwap(t, now.UnixNano()) {
			return
		}
	}
}

// conns keeps the open sockets of a scenario, so that it can drop them or
// close them at the end.
type conns struct {
	mu sync.Mutex
	ws map[int]*websocket.Conn // owned by mu, by user index
}

func newConns() *conns { return &conns{ws: map[int]*websocket.Conn{}} }

func (c *conns) set(i int, ws *websocket.Conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ws == nil {
		delete(c.ws, i)
		return
	}
	c.ws[i] = ws
}

// drop closes user i's socket abruptly: no close handshake, and a TCP
// reset rather than a FIN, which also leaves no TIME_WAIT port behind when
// thousands drop at once.
func (c *conns) drop(i int) {
	c.mu.Lock()
	ws := c.ws[i]
	c.mu.Unlock()
	if ws == nil {
		return
	}
	if tc, ok := ws.UnderlyingConn().(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = ws.Close()
}

// closeAll closes every socket.
func (c *conns) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ws := range c.ws {
		_ = ws.Close()
	}
}

// errStopped is returned by connect when the scenario ends first.
var errStopped = errors.New("recovery: stopped")

// connect opens a socket for u on the edges, starting with edges[first]
// and trying the others in turn, until one opens or ctx ends.
func connect(ctx context.Context, d dialer, edges []string, first int, u *user, m *metrics) (*websocket.Conn, error) {
	backoff := 20 * time.Millisecond
	for try := 0; ; try++ {
		ws, err := d.open(ctx, edges[(first+try)%len(edges)], u)
		if err == nil {
			return ws, nil
		}
		m.dialErrors.Add(1)
		if try%len(edges) == len(edges)-1 {
			select {
			case <-ctx.Done():
				return nil, errStopped
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
		if ctx.Err() != nil {
			return nil, errStopped
		}
	}
}
