package edgetest

// Fakes for the seams of hub and gateway (their Messaging, Registry and
// Publisher interfaces), and a socket pair whose far end reads the frames
// an edge writes, so that unit tests need neither a NATS server nor a
// WebSocket client.

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrFake is what a FakeNATS returns when told to fail.
var ErrFake = errors.New("edgetest: fake failure")

// FakeNATS stands in for a *nats.Conn: it records subscriptions and
// publications, and is connected until told otherwise. Its zero value is
// connected and confirms every flush.
type FakeNATS struct {
	mu           sync.Mutex
	disconnected bool
	flushErr     error
	publishErr   error
	subs         map[string]int // subject → subscriptions made minus those not yet dropped
	published    []*nats.Msg
}

// SetConnected makes IsConnected report connected.
func (f *FakeNATS) SetConnected(connected bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.disconnected = !connected
}

// FailFlush makes FlushWithContext return err (nil: succeed).
func (f *FakeNATS) FailFlush(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushErr = err
}

// FailPublish makes PublishMsg return err (nil: succeed).
func (f *FakeNATS) FailPublish(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.publishErr = err
}

// ChanSubscribe records a subscription to subject. The subscription it
// returns is not bound to a connection: unsubscribing it reports
// nats.ErrConnectionClosed, which callers treat as done.
func (f *FakeNATS) ChanSubscribe(subject string, _ chan *nats.Msg) (*nats.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[string]int{}
	}
	f.subs[subject]++
	return &nats.Subscription{Subject: subject}, nil
}

// Subscriptions returns how many subscriptions to subject were made.
func (f *FakeNATS) Subscriptions(subject string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs[subject]
}

// IsConnected reports what SetConnected said last (true at first).
func (f *FakeNATS) IsConnected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.disconnected
}

// FlushWithContext returns what FailFlush said, or ErrFake while disconnected.
func (f *FakeNATS) FlushWithContext(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.disconnected {
		return ErrFake
	}
	if f.flushErr != nil {
		return f.flushErr
	}
	return ctx.Err()
}

// PublishMsg records m, or returns what FailPublish said.
func (f *FakeNATS) PublishMsg(m *nats.Msg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.publishErr != nil {
		return f.publishErr
	}
	f.published = append(f.published, m)
	return nil
}

// Published returns the subjects published so far, in order.
func (f *FakeNATS) Published() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	subjects := make([]string, len(f.published))
	for i, m := range f.published {
		subjects[i] = m.Subject
	}
	return subjects
}

// SocketPair returns the two ends of a loopback TCP connection, both
// closed when the test ends: server is for the edge's wsconn, peer for the
// test to read with NewPeer.
func SocketPair(t testing.TB) (server, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close() })
	return server, peer
}

// WireFrame is one unmasked frame the edge wrote: its opcode and payload.
// A text frame's payload is a server frame; a close frame's, its code and
// reason.
type WireFrame struct {
	Op      byte
	Payload []byte
}

// Opcodes of the frames a Peer sees.
const (
	OpText  = 0x1
	OpClose = 0x8
	OpPing  = 0x9
)

// CloseCode is the code of a close frame (0 for other frames).
func (f WireFrame) CloseCode() int {
	if f.Op != OpClose || len(f.Payload) < 2 {
		return 0
	}
	return int(binary.BigEndian.Uint16(f.Payload))
}

// Frame decodes a text frame as a server frame.
func (f WireFrame) Frame() (Frame, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(f.Payload, &parts); err != nil || len(parts) < 2 {
		return Frame{}, errors.New("edgetest: malformed server frame " + string(f.Payload))
	}
	fr := Frame{Details: parts[1], Raw: f.Payload}
	_ = json.Unmarshal(parts[0], &fr.Action)
	if len(parts) > 2 {
		fr.Ref = parts[2]
	}
	return fr, nil
}

// Peer reads the frames the edge writes to the far end of a SocketPair.
type Peer struct {
	t      testing.TB
	frames chan WireFrame
}

// NewPeer starts reading conn; the reading ends with the connection (close
// it, or let SocketPair's cleanup do it).
func NewPeer(t testing.TB, conn net.Conn) *Peer {
	p := &Peer{t: t, frames: make(chan WireFrame, 1024)}
	done := make(chan struct{})
	t.Cleanup(func() { _ = conn.Close(); <-done })
	go func() {
		defer close(done)
		defer close(p.frames)
		r := bufio.NewReader(conn)
		for {
			f, err := readWireFrame(r)
			if err != nil {
				return
			}
			p.frames <- f
		}
	}()
	return p
}

// Next returns the next frame, failing the test when none comes within
// Timeout or the connection has ended.
func (p *Peer) Next() WireFrame {
	p.t.Helper()
	f, ok := p.Take()
	if !ok {
		p.t.Fatal("edgetest: no frame came")
	}
	return f
}

// Take returns the next frame, or false when none came within Timeout or
// the connection has ended.
func (p *Peer) Take() (WireFrame, bool) {
	select {
	case f, ok := <-p.frames:
		return f, ok
	case <-time.After(Timeout):
		return WireFrame{}, false
	}
}

// Expect returns the next frame decoded, failing the test unless it is a
// text frame with action.
func (p *Peer) Expect(action string) Frame {
	p.t.Helper()
	wf := p.Next()
	f, err := wf.Frame()
	if wf.Op != OpText || err != nil || f.Action != action {
		p.t.Fatalf("edgetest: got frame op %d %q, want %s", wf.Op, wf.Payload, action)
	}
	return f
}

// ExpectClose fails the test unless the next frame is a close frame with code.
func (p *Peer) ExpectClose(code int) {
	p.t.Helper()
	if wf := p.Next(); wf.CloseCode() != code {
		p.t.Fatalf("edgetest: got frame op %d %q, want close %d", wf.Op, wf.Payload, code)
	}
}

func readWireFrame(r io.Reader) (WireFrame, error) {
	var head [2]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return WireFrame{}, err
	}
	n := uint64(head[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return WireFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return WireFrame{}, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return WireFrame{}, err
	}
	return WireFrame{Op: head[0] & 0x0f, Payload: payload}, nil
}
