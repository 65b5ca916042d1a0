// Package presenceload measures wsgate's rooms and presence (DESIGN.md §9)
// on real processes started by bench/internal/stack: how long a join takes
// to be in force on every edge, how fast a large group's count is answered,
// and whether presence and the Client/online and Client/offline events stay
// exact while edges are killed with SIGKILL (the soak). bench/cmd/presence
// runs them and writes docs/perf/presence.md.
package presenceload

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

// Timing of the clients.
const (
	handshakeTimeout = 10 * time.Second
	writeWait        = 5 * time.Second
	tokenLifetime    = 24 * time.Hour
	// pollEvery is the period of the polls that wait for a state.
	pollEvery = 20 * time.Millisecond
)

// Bin says where the programs of a run are.
type Bin struct {
	Dir   string // bin/: edge and dispatcher
	NATSD string // the natsd wrapper (bench/.bin/natsd)
	Work  string // servers' logs and JetStream storage
}

// Check returns an error naming the first program that is missing.
func (b Bin) Check() error {
	for _, p := range []string{filepath.Join(b.Dir, "edge"), filepath.Join(b.Dir, "dispatcher"), b.NATSD} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s is missing: run make build and build bench/.bin (see docs/perf/presence.md)", p)
		}
	}
	return nil
}

// config is the stack of a presence run: K edges and one dispatcher with
// presence on in memory, on one NATS server with JetStream.
func (b Bin) config(name string, edges int, edgeEnv, dispEnv []string) stack.Config {
	return stack.Config{
		Gateway: "wsgate", Edges: edges, Dispatcher: true, BinDir: b.Dir, NATSD: b.NATSD,
		Secret: "presence-bench-secret", SendQueue: 256, JetStream: true,
		EdgeEnv:       append([]string{"WS_PRESENCE=memory"}, edgeEnv...),
		DispatcherEnv: append([]string{"WS_PRESENCE=memory"}, dispEnv...),
		Dir:           filepath.Join(b.Work, fmt.Sprintf("%s-%d-%d", name, os.Getpid(), time.Now().UnixNano())),
	}
}

// wsConn is one client connection of a user, read by one goroutine.
type wsConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

// dial opens a connection of user to url, signed with secret, and returns
// once the edge said "ok" (its subscriptions are confirmed, DESIGN §4).
func dial(ctx context.Context, url, secret, user string) (*wsConn, error) {
	token, err := proto.Wsgate{}.Token(secret, user, time.Now().Add(tokenLifetime))
	if err != nil {
		return nil, err
	}
	raw, hdr := proto.Wsgate{}.Dial(url, token)
	d := websocket.Dialer{HandshakeTimeout: handshakeTimeout}
	ctx, cancel := context.WithTimeout(ctx, 2*handshakeTimeout)
	defer cancel()
	ws, resp, err := d.DialContext(ctx, raw, hdr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	_ = ws.SetReadDeadline(time.Now().Add(handshakeTimeout))
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		var kind proto.Kind
		proto.Wsgate{}.Decode(msg, func(m proto.Msg) { kind = m.Kind })
		switch kind {
		case proto.KindAuthOK:
			_ = ws.SetReadDeadline(time.Time{})
			return &wsConn{ws: ws}, nil
		case proto.KindError:
			_ = ws.Close()
			return nil, fmt.Errorf("handshake refused: %s", msg)
		}
	}
}

// read calls fn with each frame until the connection ends, and returns the
// error that ended it.
func (c *wsConn) read(fn func([]byte)) error {
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		fn(msg)
	}
}

// close sends a normal close frame and closes the socket.
func (c *wsConn) close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(writeWait))
	c.wmu.Unlock()
	_ = c.ws.Close()
}

// actionOf returns the action of a wsgate frame and the rest after it.
func actionOf(frame []byte) (string, []byte) {
	if !bytes.HasPrefix(frame, []byte(`["`)) {
		return "", nil
	}
	end := bytes.IndexByte(frame[2:], '"')
	if end < 0 {
		return "", nil
	}
	return string(frame[2 : 2+end]), frame[min(2+end+2, len(frame)):]
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// errStopped is returned by a run cut short by its context.
var errStopped = errors.New("presenceload: stopped")
