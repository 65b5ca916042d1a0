// Package load is the client side of the load tool: workers that open and
// hold WebSocket connections, send requests at a paced rate and account for
// everything they receive (latency histogram, loss), and the controller that
// runs a scenario across worker processes, publishes server-side messages
// and measures the servers.
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/bench/internal/hist"
	"github.com/wsgate/wsgate/bench/internal/proto"
)

// Timing of one connection.
const (
	dialTimeout      = 15 * time.Second
	handshakeTimeout = 15 * time.Second
	writeWait        = 5 * time.Second
	tokenLifetime    = 24 * time.Hour
	maxErrorSamples  = 5
	// sendTick is the pacing period of requests.
	sendTick = time.Millisecond
)

// Job is the part of a scenario one worker runs: connections
// [First, First+Count) of the whole run.
type Job struct {
	Gateway string   `json:"gateway"`
	URLs    []string `json:"urls"`   // connection i dials URLs[(i%Tabs)%len(URLs)]
	Secret  string   `json:"secret"` // HMAC secret of the tokens
	First   int      `json:"first"`
	Count   int      `json:"count"`
	// Tabs is the number of connections per user: connection i belongs to
	// user "u<i/Tabs>" and is its tab i%Tabs.
	Tabs     int      `json:"tabs"`
	LocalIPs []string `json:"local_ips"` // source addresses, spread round robin
	RampRate float64  `json:"ramp_rate"` // connections opened per second
	Inflight int      `json:"inflight"`  // dials and handshakes at once
	// Method is the request the worker sends once told to ("echo" or
	// "hello"); empty for receive-only scenarios. Only tab 0 sends.
	Method string  `json:"method,omitempty"`
	Rate   float64 `json:"rate,omitempty"` // requests per second, this worker
	Size   int     `json:"size"`           // payload bytes
}

// User is the user id of connection i with tabs connections per user.
func User(i, tabs int) string { return "u" + strconv.Itoa(i/max(tabs, 1)) }

// Counters are a worker's running totals.
type Counters struct {
	Connected  int64  `json:"connected"`  // open now
	Opened     int64  `json:"opened"`     // handshakes completed
	Failed     int64  `json:"failed"`     // dials or handshakes that failed
	Dropped    int64  `json:"dropped"`    // connections the server ended during the run
	Sent       uint64 `json:"sent"`       // requests written
	Received   uint64 `json:"received"`   // payload messages (data or replies) read
	Errors     uint64 `json:"errors"`     // error messages read, write failures
	LastRecvNs int64  `json:"last_recv"`  // Unix ns of the last payload message
	FirstSendN int64  `json:"first_send"` // Unix ns of the first request
}

// Add sums o into c (LastRecvNs takes the latest, FirstSendN the earliest).
func (c *Counters) Add(o Counters) {
	c.Connected += o.Connected
	c.Opened += o.Opened
	c.Failed += o.Failed
	c.Dropped += o.Dropped
	c.Sent += o.Sent
	c.Received += o.Received
	c.Errors += o.Errors
	c.LastRecvNs = max(c.LastRecvNs, o.LastRecvNs)
	if o.FirstSendN != 0 && (c.FirstSendN == 0 || o.FirstSendN < c.FirstSendN) {
		c.FirstSendN = o.FirstSendN
	}
}

type conn struct {
	ws  *websocket.Conn
	wmu sync.Mutex // one writer at a time: requests and pongs
}

func (c *conn) write(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
	return c.ws.WriteMessage(websocket.TextMessage, data)
}

// Worker holds one job's connections.
type Worker struct {
	job    Job          // static
	framer proto.Framer // static
	hist   *hist.Hist

	connected, opened, failed, dropped atomic.Int64
	sent, received, errs               atomic.Uint64
	lastRecv, firstSend                atomic.Int64
	closing                            atomic.Bool

	mu      sync.Mutex
	conns   []*conn  // owned by mu: connections that completed the handshake
	senders []*conn  // owned by mu: those of tab 0
	samples []string // owned by mu: the first few error messages

	readers sync.WaitGroup
}

// NewWorker checks job and returns a worker for it.
func NewWorker(job Job) (*Worker, error) {
	f, err := proto.ForGateway(job.Gateway)
	if err != nil {
		return nil, err
	}
	if len(job.URLs) == 0 || job.Count < 0 {
		return nil, errors.New("load: job without URLs")
	}
	job.Tabs = max(job.Tabs, 1)
	job.Inflight = max(job.Inflight, 1)
	if job.RampRate <= 0 {
		job.RampRate = 1000
	}
	return &Worker{job: job, framer: f, hist: hist.New()}, nil
}

func (w *Worker) sample(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.samples) < maxErrorSamples {
		w.samples = append(w.samples, err.Error())
	}
}

// Counters returns the running totals.
func (w *Worker) Counters() Counters {
	return Counters{
		Connected: w.connected.Load(), Opened: w.opened.Load(), Failed: w.failed.Load(),
		Dropped: w.dropped.Load(), Sent: w.sent.Load(), Received: w.received.Load(),
		Errors: w.errs.Load(), LastRecvNs: w.lastRecv.Load(), FirstSendN: w.firstSend.Load(),
	}
}

// Hist returns the latency histogram so far (microseconds).
func (w *Worker) Hist() hist.Snapshot { return w.hist.Snapshot() }

// ErrorSamples returns the first few errors seen.
func (w *Worker) ErrorSamples() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.samples...)
}

// Ramp opens the job's connections at its ramp rate and returns when each
// has completed or failed its handshake, or ctx is done.
func (w *Worker) Ramp(ctx context.Context) {
	sem := make(chan struct{}, w.job.Inflight)
	var pending sync.WaitGroup
	start := time.Now()
	for k := range w.job.Count {
		due := start.Add(time.Duration(float64(k) / w.job.RampRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		pending.Add(1)
		w.readers.Add(1)
		go w.serve(w.job.First+k, func() { <-sem; pending.Done() })
	}
	pending.Wait()
}

func (w *Worker) dialer(i int) *websocket.Dialer {
	d := &websocket.Dialer{
		HandshakeTimeout: handshakeTimeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}
	nd := &net.Dialer{Timeout: dialTimeout}
	if n := len(w.job.LocalIPs); n > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(w.job.LocalIPs[i%n])}
	}
	d.NetDialContext = nd.DialContext
	return d
}

// serve dials connection i, completes its handshake (then calls ready),
// and reads until the connection ends.
func (w *Worker) serve(i int, ready func()) {
	defer w.readers.Done()
	c, err := w.open(i)
	if err != nil {
		w.failed.Add(1)
		w.sample(fmt.Errorf("conn %d: %w", i, err))
		ready()
		return
	}
	// Counted before ready, so that the ramp's end sees every connection.
	w.opened.Add(1)
	w.connected.Add(1)
	ready()
	err = w.read(c)
	w.connected.Add(-1)
	if !w.closing.Load() {
		w.dropped.Add(1)
		w.sample(fmt.Errorf("conn %d dropped: %w", i, err))
	}
}

func (w *Worker) open(i int) (*conn, error) {
	tabs := w.job.Tabs
	user := User(i, tabs)
	token, err := w.framer.Token(w.job.Secret, user, time.Now().Add(tokenLifetime))
	if err != nil {
		return nil, err
	}
	base := w.job.URLs[(i%tabs)%len(w.job.URLs)]
	url, hdr := w.framer.Dial(base, token)
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout+handshakeTimeout)
	defer cancel()
	ws, resp, err := w.dialer(i).DialContext(ctx, url, hdr)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: %w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := &conn{ws: ws}
	if hello := w.framer.Hello(token); hello != nil {
		if err := c.write(hello); err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
	}
	_ = ws.SetReadDeadline(time.Now().Add(handshakeTimeout))
	for {
		_, frame, err := ws.ReadMessage()
		if err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		var ok bool
		var refusal []byte
		w.framer.Decode(frame, func(m proto.Msg) {
			switch m.Kind {
			case proto.KindAuthOK:
				ok = true
			case proto.KindError:
				refusal = append(refusal, m.Body...)
			}
		})
		if refusal != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("handshake refused: %s", refusal)
		}
		if ok {
			break
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	w.mu.Lock()
	w.conns = append(w.conns, c)
	if i%tabs == 0 {
		w.senders = append(w.senders, c)
	}
	w.mu.Unlock()
	return c, nil
}

// read is the connection's read loop; it returns the error that ended it.
func (w *Worker) read(c *conn) error {
	var buf bytes.Buffer
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		w.framer.Decode(buf.Bytes(), func(m proto.Msg) {
			switch m.Kind {
			case proto.KindData, proto.KindReply:
				if ts, _, ok := proto.ParsePayload(m.Body); ok {
					w.hist.Record((now - ts) / 1000)
					w.received.Add(1)
					w.lastRecv.Store(now)
				}
			case proto.KindError:
				w.errs.Add(1)
				w.sample(fmt.Errorf("server sent %s", m.Body))
			case proto.KindPing:
				if p := w.framer.Pong(); p != nil {
					if err := c.write(p); err != nil {
						w.errs.Add(1)
					}
				}
			}
		})
	}
}

// Send writes requests at the job's rate, round robin over the connections
// of tab 0, until ctx is done. It does not catch up more than one second
// of lag at once, so a stalled process cannot burst without bound.
func (w *Worker) Send(ctx context.Context) {
	w.mu.Lock()
	senders := append([]*conn(nil), w.senders...)
	w.mu.Unlock()
	if w.job.Method == "" || w.job.Rate <= 0 || len(senders) == 0 {
		return
	}
	ticker := time.NewTicker(sendTick)
	defer ticker.Stop()
	start := time.Now()
	w.firstSend.CompareAndSwap(0, start.UnixNano())
	var sent, skipped, next uint64
	var payload, frame []byte
	seqBase := uint64(w.job.First) << 32 // request ids unique across workers
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			due := uint64(w.job.Rate*now.Sub(start).Seconds()) - skipped
			if lag := due - sent; due > sent && float64(lag) > w.job.Rate {
				skipped += lag - uint64(w.job.Rate)
				due = sent + uint64(w.job.Rate)
			}
			for ; sent < due && ctx.Err() == nil; sent++ {
				c := senders[next%uint64(len(senders))]
				next++
				seq := seqBase + sent
				payload = proto.AppendPayload(payload[:0], time.Now().UnixNano(), seq, w.job.Size)
				frame = w.framer.AppendRequest(frame[:0], w.job.Method, seq, payload)
				if err := c.write(frame); err != nil {
					w.errs.Add(1)
					continue
				}
				w.sent.Add(1)
			}
		}
	}
}

// Close ends every connection at once and waits for their readers.
func (w *Worker) Close() {
	w.closing.Store(true)
	w.mu.Lock()
	conns := w.conns
	w.mu.Unlock()
	for _, c := range conns {
		_ = c.ws.NetConn().Close()
	}
	w.readers.Wait()
}
