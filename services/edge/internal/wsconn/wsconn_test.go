package wsconn

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/wsgate/wsgate/api/wire"
)

// testConn is a Conn on the server end of a pair, with what it reported.
type testConn struct {
	*Conn
	stats *countStats
	sent  int        // frames queued, for tests that count them
	ended chan error // the error onError was called with (once)
}

// newTestConn wraps server; the test's end aborts it and waits for its writer.
func newTestConn(t testing.TB, server net.Conn, maxQueue int) *testConn {
	t.Helper()
	tc := &testConn{stats: &countStats{}, ended: make(chan error, 1)}
	tc.Conn = New(server, maxQueue, tc.stats, func(err error) {
		select {
		case tc.ended <- err:
		default:
			t.Errorf("onError called twice, now with %v", err)
		}
	})
	t.Cleanup(func() { tc.Abort(); tc.Wait() })
	return tc
}

// endErr returns the error writing ended with.
func (tc *testConn) endErr(t testing.TB) error {
	t.Helper()
	select {
	case err := <-tc.ended:
		return err
	case <-time.After(testTimeout):
		t.Fatal("writing did not end")
		return nil
	}
}

// numbered is the i-th test payload, n bytes long (at least its number).
func numbered(i, n int) []byte {
	p := fmt.Appendf(nil, "frame %d ", i)
	for len(p) < n {
		p = append(p, byte('a'+len(p)%26))
	}
	return p
}

// collect reads server frames from client in a goroutine until the
// connection ends; the result comes when it does.
func collect(t testing.TB, client net.Conn) <-chan []serverFrame {
	ch := make(chan []serverFrame, 1)
	go func() { ch <- readServerFrames(t, client) }()
	return ch
}

// TestConnWritesInOrder: frames arrive whole and in order whichever way they
// are written: inline by Send, by a flusher in another goroutine, many in
// one writev (more than one writev's worth), or by the writer goroutine
// when the socket does not take them at once.
func TestConnWritesInOrder(t *testing.T) {
	tests := []struct {
		name   string
		frames int
		size   int
		write  func(t *testing.T, c *testConn, frames [][]byte)
		queued bool // written through Queue (deliveries: latency recorded)
	}{
		{name: "Send", frames: 100, size: 50, write: func(t *testing.T, c *testConn, frames [][]byte) {
			for _, f := range frames {
				if err := c.Send(f); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{name: "Queue, then Flush by another goroutine", frames: 100, size: 300, queued: true,
			write: func(t *testing.T, c *testConn, frames [][]byte) {
				batch := queueAll(t, c, frames)
				done := make(chan struct{})
				go func() { defer close(done); batch.Flush() }()
				<-done
			}},
		{name: "many frames coalesced", frames: 2*maxIovecs + 10, size: 20, queued: true,
			write: func(t *testing.T, c *testConn, frames [][]byte) {
				batch := queueAll(t, c, frames)
				batch.Flush()
			}},
		{name: "more than the socket takes at once", frames: 8, size: 1 << 20, write: func(t *testing.T, c *testConn, frames [][]byte) {
			for _, f := range frames {
				if err := c.Send(f); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{name: "Queue while another goroutine flushes", frames: 500, size: 2000, queued: true,
			write: func(t *testing.T, c *testConn, frames [][]byte) {
				var wg sync.WaitGroup
				for _, f := range frames {
					var batch Batch
					if err := c.Queue(&batch, f, time.Now()); err != nil {
						t.Fatal(err)
					}
					if batch.Len() > 0 {
						wg.Go(batch.Flush)
					}
				}
				wg.Wait()
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			c := newTestConn(t, server, 4*maxIovecs)
			got := collect(t, client)
			var frames, payloads [][]byte
			for i := range tc.frames {
				p := numbered(i, tc.size)
				payloads = append(payloads, p)
				frames = append(frames, TextFrame(p))
			}
			tc.write(t, c, frames)
			if !c.Close(wire.CloseNormal, "done") {
				t.Fatal("Close did not count")
			}
			if err := c.endErr(t); !IsClosedByUs(err) {
				t.Fatalf("writing ended with %v, want the close frame sent", err)
			}
			c.Abort()
			fs := <-got
			if len(fs) != tc.frames+1 {
				t.Fatalf("peer got %d frames, want %d", len(fs), tc.frames+1)
			}
			for i, p := range payloads {
				if f := fs[i]; !f.fin || f.op != opText || !bytes.Equal(f.payload, p) {
					t.Fatalf("frame %d is %v, want text %.20q", i, f, p)
				}
			}
			if n := c.stats.frames.Load(); n != int64(tc.frames) {
				t.Errorf("stats: %d frames written, want %d", n, tc.frames)
			}
			want := int64(0)
			if tc.queued {
				want = int64(tc.frames)
			}
			if n := c.stats.latencies.Load(); n != want {
				t.Errorf("stats: %d latencies, want %d", n, want)
			}
		})
	}
}

// queueAll queues frames and returns the batch that holds the writing:
// only the first Queue may hand it over.
func queueAll(t *testing.T, c *testConn, frames [][]byte) *Batch {
	t.Helper()
	var batch Batch
	for i, f := range frames {
		if err := c.Queue(&batch, f, time.Now()); err != nil {
			t.Fatal(err)
		}
		if batch.Len() != 1 {
			t.Fatalf("after Queue %d the batch holds %d connections, want 1", i, batch.Len())
		}
	}
	return &batch
}

// TestConnControlFrames: pings and pongs go out between text frames, in order.
func TestConnControlFrames(t *testing.T) {
	server, client := tcpPair(t)
	c := newTestConn(t, server, 16)
	got := collect(t, client)
	if err := c.Send(TextFrame([]byte("one"))); err != nil {
		t.Fatal(err)
	}
	var batch Batch
	c.Ping(&batch)
	batch.Flush()
	if err := c.Pong([]byte("app data")); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(TextFrame([]byte("two"))); err != nil {
		t.Fatal(err)
	}
	c.Close(wire.CloseNoStatus, "")
	c.endErr(t)
	c.Abort()
	want := []serverFrame{
		{true, opText, []byte("one")}, {true, opPing, []byte{}}, {true, opPong, []byte("app data")},
		{true, opText, []byte("two")}, {true, opClose, []byte{}},
	}
	checkFrames(t, <-got, want)
	if n := c.stats.frames.Load(); n != 2 {
		t.Errorf("stats: %d frames, want 2 (control frames are not counted)", n)
	}
}

func checkFrames(t testing.TB, got, want []serverFrame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got frames %v, want %v", got, want)
	}
	for i := range got {
		if got[i].fin != want[i].fin || got[i].op != want[i].op || !bytes.Equal(got[i].payload, want[i].payload) {
			t.Errorf("frame %d is %v, want %v", i, got[i], want[i])
		}
	}
}

// TestConnClose: the close frame carries the code and the reason, cut to fit
// at a rune boundary; it is the last frame, and nothing is accepted after it.
func TestConnClose(t *testing.T) {
	tests := []struct {
		name       string
		code       int
		reason     string
		wantReason string
	}{
		{name: "code and reason", code: wire.CloseNormal, reason: "bye", wantReason: "bye"},
		{name: "no status", code: wire.CloseNoStatus, reason: "ignored"},
		{name: "reason of 123 bytes", code: wire.CloseGoingAway, reason: strings.Repeat("r", 123), wantReason: strings.Repeat("r", 123)},
		{name: "reason of 124 bytes", code: wire.CloseGoingAway, reason: strings.Repeat("r", 124), wantReason: strings.Repeat("r", 123)},
		{name: "2-byte rune across the cut", code: wire.ClosePolicy, reason: strings.Repeat("r", 122) + "éé", wantReason: strings.Repeat("r", 122)},
		{name: "3-byte rune across the cut", code: wire.ClosePolicy, reason: strings.Repeat("r", 121) + "€", wantReason: strings.Repeat("r", 121)},
		{name: "runes up to the cut", code: wire.CloseSlowConsumer, reason: strings.Repeat("é", 70), wantReason: strings.Repeat("é", 61)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := tcpPair(t)
			c := newTestConn(t, server, 16)
			got := collect(t, client)
			if err := c.Send(TextFrame([]byte("before"))); err != nil {
				t.Fatal(err)
			}
			if !c.Close(tc.code, tc.reason) {
				t.Fatal("first Close did not count")
			}
			if c.Close(wire.CloseInternal, "again") {
				t.Error("second Close counted")
			}
			if code := c.CloseCode(); code != tc.code {
				t.Errorf("CloseCode %d, want %d", code, tc.code)
			}
			if err := c.endErr(t); !IsClosedByUs(err) {
				t.Errorf("writing ended with %v, want the close frame sent", err)
			}
			checkClosed(t, c)
			c.Abort()
			fs := <-got
			payload := []byte{}
			if tc.code != wire.CloseNoStatus {
				payload = closePayload(tc.code, tc.wantReason)
			}
			checkFrames(t, fs, []serverFrame{{true, opText, []byte("before")}, {true, opClose, payload}})
			if len(payload) > maxControlPayload || !utf8.Valid(payload[min(2, len(payload)):]) {
				t.Errorf("close payload % x is not a valid control payload", payload)
			}
		})
	}
}

// TestConnLingerEndsWithTheCloseFrame: once the close frame is written,
// Linger returns at once, whatever its bound: the owner closes the socket
// right after the closing handshake (RFC 6455 §7.1.1) instead of waiting out
// the grace. Linger also returns at once when nothing is queued, and waits
// while a frame is still to be written.
func TestConnLingerEndsWithTheCloseFrame(t *testing.T) {
	server, client := tcpPair(t)
	c := newTestConn(t, server, 16)
	lingered := func() <-chan struct{} {
		done := make(chan struct{})
		go func() { c.Linger(time.Hour); close(done) }()
		return done
	}
	select {
	case <-lingered():
	case <-time.After(testTimeout):
		t.Fatal("Linger with nothing queued did not return")
	}
	got := collect(t, client)
	c.Close(wire.CloseNormal, "bye")
	if err := c.endErr(t); !IsClosedByUs(err) {
		t.Fatalf("writing ended with %v, want the close frame sent", err)
	}
	select {
	case <-lingered():
	case <-time.After(testTimeout):
		t.Fatal("Linger did not return although the close frame is out")
	}
	c.Abort()
	checkFrames(t, <-got, []serverFrame{{true, opClose, closePayload(wire.CloseNormal, "bye")}})
}

// checkClosed checks that c takes nothing more.
func checkClosed(t testing.TB, c *testConn) {
	t.Helper()
	if err := c.Send(TextFrame([]byte("late"))); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after close: %v, want ErrClosed", err)
	}
	var batch Batch
	if err := c.Queue(&batch, TextFrame([]byte("late")), time.Now()); !errors.Is(err, ErrClosed) {
		t.Errorf("Queue after close: %v, want ErrClosed", err)
	}
	if err := c.Pong(nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Pong after close: %v, want ErrClosed", err)
	}
	if c.Ping(&batch); batch.Len() != 0 {
		t.Error("Queue or Ping after close handed over the writing")
	}
}

// TestConnSlowConsumer: a peer that does not read fills the queue; the
// connection is then closed with 4500 and takes nothing more. A peer that
// reads again gets whole frames, in order, then the close frame; one that
// never does is torn down by Abort without leaving a writer behind.
func TestConnSlowConsumer(t *testing.T) {
	const maxQueue = 4
	for _, readsAgain := range []bool{true, false} {
		name := "peer never reads"
		if readsAgain {
			name = "peer reads again"
		}
		t.Run(name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			server, client := tcpPair(t)
			// Small socket buffers, so that the peer stops taking data early.
			if err := server.SetWriteBuffer(16 << 10); err != nil {
				t.Fatal(err)
			}
			if err := client.SetReadBuffer(16 << 10); err != nil {
				t.Fatal(err)
			}
			c := newTestConn(t, server, maxQueue)
			var sent int
			var overflow error
			for sent = 0; sent < 1000 && overflow == nil; sent++ {
				var batch Batch
				overflow = c.Queue(&batch, TextFrame(numbered(sent, 64<<10)), time.Now())
				batch.Flush()
			}
			if !errors.Is(overflow, ErrQueueFull) {
				t.Fatalf("after %d frames of 64 KiB: %v, want ErrQueueFull", sent, overflow)
			}
			if code := c.CloseCode(); code != wire.CloseSlowConsumer {
				t.Errorf("CloseCode %d, want %d", code, wire.CloseSlowConsumer)
			}
			checkClosed(t, c)
			if c.Close(wire.CloseNormal, "") {
				t.Error("Close after the overflow counted")
			}

			if !readsAgain {
				c.Abort()
				c.Wait()
				if err := c.endErr(t); err == nil || IsClosedByUs(err) {
					t.Errorf("writing ended with %v, want the write error", err)
				}
				return
			}
			got := collect(t, client)
			if err := c.endErr(t); !IsClosedByUs(err) {
				t.Errorf("writing ended with %v, want the close frame sent", err)
			}
			c.Abort()
			fs := <-got
			if len(fs) == 0 || fs[len(fs)-1].op != opClose {
				t.Fatalf("peer got %v, want frames then a close frame", fs)
			}
			want := closePayload(wire.CloseSlowConsumer, "slow consumer")
			if last := fs[len(fs)-1]; !bytes.Equal(last.payload, want) {
				t.Errorf("close frame %v, want payload % x", last, want)
			}
			// The frames that were dropped are the last ones: what came is
			// the first ones, whole and in order.
			for i, f := range fs[:len(fs)-1] {
				if want := numbered(i, 64<<10); f.op != opText || !bytes.Equal(f.payload, want) {
					t.Fatalf("frame %d is %v, want %.20q", i, f, want)
				}
			}
			if len(fs)-1 >= sent {
				t.Errorf("peer got %d frames of %d sent, although the queue overflowed", len(fs)-1, sent)
			}
		})
	}
}

// TestConnAbortWait: Abort ends a writer blocked on a full socket, Wait
// waits for it, and nothing is written or started afterwards.
func TestConnAbortWait(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	server, _ := tcpPair(t)
	c := newTestConn(t, server, 16)
	// 8 MiB cannot fit in the socket buffers of a peer that does not read:
	// a writer goroutine is left blocked.
	if err := c.Send(TextFrame(make([]byte, 8<<20))); err != nil {
		t.Fatal(err)
	}
	c.Abort()
	c.Wait()
	if err := c.endErr(t); err == nil {
		t.Error("writing ended without an error")
	}
	checkClosed(t, c)
	c.Abort() // idempotent
	c.Wait()
}

// TestConnAbortBeforeFlush: a caller handed the writing by Queue that
// flushes after Abort starts no writer and writes nothing.
func TestConnAbortBeforeFlush(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	server, _ := tcpPair(t)
	c := newTestConn(t, server, 16)
	var batch Batch
	if err := c.Queue(&batch, TextFrame([]byte("x")), time.Now()); batch.Len() != 1 || err != nil {
		t.Fatalf("Queue: batch of %d, %v", batch.Len(), err)
	}
	c.Abort()
	batch.Flush()
	c.Wait()
	if err := c.endErr(t); err == nil {
		t.Error("writing ended without an error")
	}
	if n := c.stats.frames.Load(); n != 0 {
		t.Errorf("%d frames written after Abort", n)
	}
}

// TestConnOverGorilla runs Reader and Conn on the server side of a real
// WebSocket handshake, as the edge does, against gorilla's client.
func TestConnOverGorilla(t *testing.T) {
	conns := make(chan net.Conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conns <- ws.NetConn()
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	nc := <-conns
	t.Cleanup(func() { nc.Close() })
	c := newTestConn(t, nc, 16)
	r, err := NewReader(nc, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(testTimeout))

	// gorilla writes a message larger than its 4 KiB write buffer as fragments.
	large := bytes.Repeat([]byte("fragmented "), 1000)
	pongs := make(chan string, 1)
	ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
	for _, m := range []struct {
		op   int
		data []byte
	}{{websocket.TextMessage, []byte("hello")}, {websocket.TextMessage, large}, {websocket.PingMessage, []byte("ping")}, {websocket.BinaryMessage, []byte{0, 1}}} {
		var err error
		if m.op == websocket.PingMessage {
			err = ws.WriteControl(m.op, m.data, time.Now().Add(testTimeout))
		} else {
			err = ws.WriteMessage(m.op, m.data)
		}
		if err != nil {
			t.Fatal(err)
		}
		got := nextMessage(t, r)
		if int(got.Op) != m.op || !bytes.Equal(got.Data, m.data) {
			t.Fatalf("read op %d, %d bytes; want op %d, %d bytes", got.Op, len(got.Data), m.op, len(m.data))
		}
		if got.Op == OpPing {
			if err := c.Pong(got.Data); err != nil {
				t.Fatal(err)
			}
		}
	}

	if err := c.Send(TextFrame([]byte("sent"))); err != nil {
		t.Fatal(err)
	}
	var batch Batch
	if err := c.Queue(&batch, TextFrame(large), time.Now()); err != nil || batch.Len() != 1 {
		t.Fatalf("Queue: batch of %d, %v", batch.Len(), err)
	}
	batch.Flush()
	c.Close(wire.CloseTokenExpired, "token expired")
	for _, want := range [][]byte{[]byte("sent"), large} {
		_, data, err := ws.ReadMessage()
		if err != nil || !bytes.Equal(data, want) {
			t.Fatalf("client read %.20q, %v; want %.20q", data, err, want)
		}
	}
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != wire.CloseTokenExpired || ce.Text != "token expired" {
		t.Fatalf("client read %v, want close 4001 token expired", err)
	}
	if got := <-pongs; got != "ping" {
		t.Errorf("pong %q, want ping", got)
	}
	// gorilla answers the close frame with its own, as a browser does.
	got := nextMessage(t, r)
	if code, ok := ParseClose(got.Data); got.Op != OpClose || !ok || code != wire.CloseTokenExpired {
		t.Fatalf("read %v, want the close frame answered with 4001", got)
	}
	ws.Close()
	if _, errs := readAll(t, r); len(errs) != 1 {
		t.Fatalf("after the close: %v, want io.EOF alone", errs)
	}
}

// nextMessage waits for one message.
func nextMessage(t testing.TB, r *Reader) Message {
	t.Helper()
	for {
		m, ok, err := r.Next()
		switch {
		case err != nil:
			t.Fatal(err)
		case ok:
			return Message{Op: m.Op, Data: bytes.Clone(m.Data)}
		}
		if err := r.Wait(); err != nil {
			t.Fatal(err)
		}
	}
}
