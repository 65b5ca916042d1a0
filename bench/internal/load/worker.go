// Package load is the client side of the load tool: workers that open and
// hold WebSocket connections, send requests at a paced rate and account for
// everything they receive (latency histogram, loss), and the controller that
// runs a scenario across worker processes, publishes server-side messages
// and measures the servers.
package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

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
	URLs    []string `json:"urls"`   // connection i dials URLs[EdgeOf(i, Tabs, len(URLs))]
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
	// Client is how the worker reads: ClientEpoll (default) or
	// ClientGorilla.
	Client string `json:"client,omitempty"`
	// Compress (gorilla client): offer permessage-deflate, as browsers do;
	// an edge with EDGE_COMPRESSION=on then sends compressed frames.
	Compress bool `json:"compress,omitempty"`
	// Text: payloads of application-like JSON (proto.AppendTextPayload).
	Text bool `json:"text,omitempty"`
	// Reliable sends each request with a message id (wsgate, DESIGN.md
	// §8): the edge acknowledges it once the inbound stream stored it.
	Reliable bool `json:"reliable,omitempty"`
}

// EdgeOf is the edge (index of a URL among edges) that connection i dials:
// users are spread round robin over the edges, and the tabs of one user go
// to consecutive edges, so that with as many edges as tabs each tab of a
// user is on another edge (hello's case).
func EdgeOf(i, tabs, edges int) int {
	tabs = max(tabs, 1)
	return (i/tabs + i%tabs) % max(edges, 1)
}

func (w *Worker) edgeOf(i int) int { return EdgeOf(i, w.job.Tabs, len(w.job.URLs)) }

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
	// Acked counts the Server/ack of reliable requests, AckDuplicates
	// those that said duplicate: true.
	Acked         uint64 `json:"acked,omitempty"`
	AckDuplicates uint64 `json:"ack_duplicates,omitempty"`
	// WireBytes (gorilla client) are the bytes its sockets read: frames as
	// sent, compressed or not, with their headers, the handshake and pings.
	WireBytes uint64 `json:"wire_bytes,omitempty"`
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
	c.Acked += o.Acked
	c.AckDuplicates += o.AckDuplicates
	c.WireBytes += o.WireBytes
	c.LastRecvNs = max(c.LastRecvNs, o.LastRecvNs)
	if o.FirstSendN != 0 && (c.FirstSendN == 0 || o.FirstSendN < c.FirstSendN) {
		c.FirstSendN = o.FirstSendN
	}
}

// Worker holds one job's connections.
type Worker struct {
	job     Job          // static
	framer  proto.Framer // static
	hist    *hist.Hist
	ackHist *hist.Hist // reliable requests: send to Server/ack

	connected, opened, failed, dropped atomic.Int64
	sent, received, errs               atomic.Uint64
	acked, ackDups                     atomic.Uint64
	wireBytes                          atomic.Uint64 // gorilla client: bytes read from its sockets
	lastRecv, firstSend                atomic.Int64
	closing                            atomic.Bool

	mu      sync.Mutex
	senders []msgWriter // owned by mu: open connections of tab 0
	samples []string    // owned by mu: the first few error messages

	loops     []*loop        // static: they read every open connection (epoll client)
	gorilla   gorillaSet     // the connections of the gorilla client
	opening   sync.WaitGroup // serve goroutines
	closeOnce sync.Once
}

// NewWorker checks job and returns a worker for it, its event loops
// running: Close stops them.
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
	if job.Client, err = checkClient(job.Client); err != nil {
		return nil, err
	}
	if job.Reliable && job.Gateway != "wsgate" {
		return nil, errors.New("load: reliable requests are wsgate's (DESIGN.md §8)")
	}
	if job.Compress && job.Client != ClientGorilla {
		return nil, errors.New("load: compression needs the gorilla client (the epoll client does not inflate)")
	}
	w := &Worker{job: job, framer: f, hist: hist.New(), ackHist: hist.New()}
	if job.Client == ClientGorilla {
		return w, nil
	}
	for range runtime.GOMAXPROCS(0) {
		l, err := newLoop(w)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.loops = append(w.loops, l)
		go l.run() // owned by w: Close stops it and waits
	}
	return w, nil
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
		Acked: w.acked.Load(), AckDuplicates: w.ackDups.Load(), WireBytes: w.wireBytes.Load(),
	}
}

// AckHist returns the histogram of send to Server/ack so far
// (microseconds; reliable requests only).
func (w *Worker) AckHist() hist.Snapshot { return w.ackHist.Snapshot() }

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
		w.opening.Add(1)
		done := func() { <-sem; pending.Done() }
		if w.job.Client == ClientGorilla {
			go w.serveGorilla(w.job.First+k, done)
			continue
		}
		go w.serve(w.job.First+k, w.loops[k%len(w.loops)], done)
	}
	pending.Wait()
}

func (w *Worker) dialer(i int) *net.Dialer {
	d := &net.Dialer{Timeout: dialTimeout}
	if n := len(w.job.LocalIPs); n > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(w.job.LocalIPs[i%n])}
	}
	return d
}

// serve dials connection i, completes its handshake and hands it to loop
// l, which reads it until it ends; then it calls ready.
func (w *Worker) serve(i int, l *loop, ready func()) {
	defer w.opening.Done()
	// Called last, so that the ramp's end sees every connection counted and
	// every sender listed.
	defer ready()
	c, err := w.open(i)
	if err != nil {
		w.failed.Add(1)
		w.sample(fmt.Errorf("conn %d: %w", i, err))
		return
	}
	w.opened.Add(1)
	w.connected.Add(1)
	// Messages that came with the handshake's last read are handled before
	// the loop reads more: it is told only of bytes still in the socket.
	if len(c.in) > 0 {
		if err := newReceiver(w).feed(c, nil); err != nil {
			c.close()
			w.ended(c, err)
			return
		}
	}
	if err := l.add(c); err != nil {
		c.close()
		w.ended(c, err)
		return
	}
	if i%w.job.Tabs == 0 {
		w.mu.Lock()
		w.senders = append(w.senders, c)
		w.mu.Unlock()
	}
}

// ended accounts for the end of an open connection, which err ended.
func (w *Worker) ended(c *conn, err error) {
	w.connected.Add(-1)
	if !w.closing.Load() {
		w.dropped.Add(1)
		w.sample(fmt.Errorf("conn %d dropped: %w", c.id, err))
	}
}

// open dials connection i and completes its WebSocket and gateway
// handshakes.
func (w *Worker) open(i int) (*conn, error) {
	token, err := w.framer.Token(w.job.Secret, User(i, w.job.Tabs), time.Now().Add(tokenLifetime))
	if err != nil {
		return nil, err
	}
	raw, hdr := w.framer.Dial(w.job.URLs[w.edgeOf(i)], token)
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("url %s: only ws:// is supported", raw)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	nc, err := w.dialer(i).Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return w.handshake(i, nc, u, hdr, token)
}

// handshake upgrades nc, sends the gateway's hello and waits for its
// acceptance or refusal. nc serves the handshake, for its read deadlines,
// and is closed then: the connection holds a duplicate of its socket.
// Messages after the acceptance stay in the connection's parser.
func (w *Worker) handshake(i int, nc net.Conn, u *url.URL, hdr http.Header, token string) (*conn, error) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	rest, err := upgrade(nc, u, hdr)
	if err != nil {
		return nil, err
	}
	fd, err := dupSocket(nc)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c := &conn{id: i, fd: fd}
	if err := w.authenticate(c, nc, rest, token); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// authenticate sends the gateway's hello on c and reads nc, starting with
// rest, until the gateway accepts or refuses.
func (w *Worker) authenticate(c *conn, nc net.Conn, rest []byte, token string) error {
	if hello := w.framer.Hello(token); hello != nil {
		if err := c.write(opText, hello); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
	}
	_ = nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var accepted bool
	var refusal []byte
	decoded := func(m proto.Msg) {
		switch m.Kind {
		case proto.KindAuthOK:
			accepted = true
		case proto.KindError:
			refusal = append(refusal, m.Body...)
		}
	}
	// Stop at the message that decides: later ones are the loop's to count.
	decide := func(msg []byte) bool {
		w.framer.Decode(msg, decoded)
		return !accepted && refusal == nil
	}
	buf := make([]byte, 4096)
	for data := rest; ; {
		if err := c.feed(data, decide); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if refusal != nil {
			return fmt.Errorf("handshake refused: %s", refusal)
		}
		if accepted {
			return nil
		}
		n, err := nc.Read(buf)
		if err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		data = buf[:n]
	}
}

// receiver handles the messages of a reader's reads exactly as the load
// tool counts them. A loop keeps one, its callbacks bound once, so that a
// message costs no allocation.
type receiver struct {
	w         *Worker
	c         *conn     // the connection being read (epoll client)
	out       msgWriter // where replies to it go
	now       int64     // Unix ns of the read: the arrival of its messages
	onMessage func(msg []byte) bool
	onDecoded func(proto.Msg)
}

func newReceiver(w *Worker) *receiver {
	r := &receiver{w: w}
	r.onMessage = r.message
	r.onDecoded = r.decoded
	return r
}

// feed hands data, one read of c, to c's parser.
func (r *receiver) feed(c *conn, data []byte) error {
	r.c, r.out, r.now = c, c, time.Now().UnixNano()
	return c.feed(data, r.onMessage)
}

func (r *receiver) message(msg []byte) bool {
	r.w.framer.Decode(msg, r.onDecoded)
	return true
}

func (r *receiver) decoded(m proto.Msg) {
	w := r.w
	switch m.Kind {
	case proto.KindData, proto.KindReply:
		if ts, _, ok := proto.ParsePayload(m.Body); ok {
			w.hist.Record((r.now - ts) / 1000)
			w.received.Add(1)
			w.lastRecv.Store(r.now)
		}
	case proto.KindAck:
		w.ack(m.Body, r.now)
	case proto.KindError:
		w.errs.Add(1)
		w.sample(fmt.Errorf("server sent %s", m.Body))
	case proto.KindPing:
		if p := w.framer.Pong(); p != nil {
			if err := r.out.write(opText, p); err != nil {
				w.errs.Add(1)
			}
		}
	}
}

// ack accounts for a Server/ack read at now: an ack that is not durable
// means the edge runs without the inbound stream, which a reliable run
// counts as an error.
func (w *Worker) ack(body []byte, now int64) {
	a, ok := proto.ParseAck(body)
	_, sendNs, idOK := proto.ParseMsgID(a.ID)
	if !ok || !idOK || !a.Durable {
		w.errs.Add(1)
		w.sample(fmt.Errorf("unexpected ack %s", body))
		return
	}
	w.ackHist.Record((now - sendNs) / 1000)
	w.acked.Add(1)
	if a.Duplicate {
		w.ackDups.Add(1)
	}
}

// Send writes requests at the job's rate, round robin over the connections
// of tab 0, until ctx is done. It does not catch up more than one second
// of lag at once, so a stalled process cannot burst without bound.
func (w *Worker) Send(ctx context.Context) {
	w.mu.Lock()
	senders := append([]msgWriter(nil), w.senders...)
	w.mu.Unlock()
	if w.job.Method == "" || w.job.Rate <= 0 || len(senders) == 0 {
		return
	}
	ticker := time.NewTicker(sendTick)
	defer ticker.Stop()
	start := time.Now()
	w.firstSend.CompareAndSwap(0, start.UnixNano())
	var sent, skipped, next uint64
	var payload, frame, id []byte
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
				now := time.Now().UnixNano()
				payload = appendPayload(w.job.Text, payload[:0], now, seq, w.job.Size)
				if w.job.Reliable {
					id = proto.AppendMsgID(id[:0], seq, now)
					frame = proto.AppendWsgateReliable(frame[:0], w.job.Method, seq, id, payload)
				} else {
					frame = w.framer.AppendRequest(frame[:0], w.job.Method, seq, payload)
				}
				if err := c.write(opText, frame); err != nil {
					w.errs.Add(1)
					continue
				}
				w.sent.Add(1)
			}
		}
	}
}

// Close ends every connection at once and returns when the event loops
// have stopped and every dial in progress has ended.
func (w *Worker) Close() {
	w.closeOnce.Do(func() {
		w.closing.Store(true)
		for _, l := range w.loops {
			l.stop()
		}
		// A handshake that completes now finds its loop (or the gorilla
		// set) closed and ends.
		w.gorilla.close()
		w.opening.Wait()
		for _, l := range w.loops {
			l.close()
		}
	})
}
