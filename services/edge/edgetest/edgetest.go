// Package edgetest has what tests of wsgate need around a real edge: an
// in-process NATS server, tokens, and a WebSocket client that records frames.
package edgetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/internal/testkit"
)

// Timeout is how long helpers wait for something that should happen.
const Timeout = testkit.Timeout

// RunNATS starts an in-process NATS server on a free loopback port and
// shuts it down when the test ends (testkit.RunNATS).
func RunNATS(t testing.TB) *natsserver.Server {
	t.Helper()
	return testkit.RunNATS(t, &natsserver.Options{})
}

// RunNATSWith is RunNATS with options; host and ports default to loopback
// and free ports.
func RunNATSWith(t testing.TB, opts *natsserver.Options) *natsserver.Server {
	t.Helper()
	return testkit.RunNATS(t, opts)
}

// RunJetStream is RunNATS with JetStream on, its store in a temporary
// directory of the test.
func RunJetStream(t testing.TB) *natsserver.Server {
	t.Helper()
	return testkit.RunJetStream(t)
}

// Connect returns a connection to url, closed when the test ends.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	return testkit.Connect(t, url)
}

// Token signs claims with HS256 and secret. A missing exp gets one hour.
func Token(t testing.TB, secret string, claims jwt.MapClaims) string {
	t.Helper()
	if _, ok := claims["exp"]; !ok {
		claims["exp"] = time.Now().Add(time.Hour).Unix()
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return s
}

// Frame is one frame received from the edge.
type Frame struct {
	Action  string
	Details json.RawMessage
	Ref     json.RawMessage
	Raw     []byte
}

// Error decodes the details of an error frame.
func (f Frame) Error() (code int, msg string) {
	var d [2]any
	_ = json.Unmarshal(f.Details, &d)
	if c, ok := d[0].(float64); ok {
		code = int(c)
	}
	msg, _ = d[1].(string)
	return code, msg
}

// String renders the raw frame.
func (f Frame) String() string { return string(f.Raw) }

// Client is a WebSocket client that records every frame it receives.
type Client struct {
	t      testing.TB
	WS     *websocket.Conn
	frames chan Frame
	done   chan struct{}
	err    error // set before done is closed
}

// Dial connects to url with header and fails the test on error.
func Dial(t testing.TB, url string, header http.Header) *Client {
	t.Helper()
	c, resp, err := TryDial(t, url, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	return c
}

// TryDial connects to url with header and returns the dial error, if any.
func TryDial(t testing.TB, url string, header http.Header) (*Client, *http.Response, error) {
	t.Helper()
	return DialWith(t, url, header, nil)
}

// DialWith is TryDial with a setup function that may change the connection
// (its handlers, say) before the client starts reading.
func DialWith(t testing.TB, url string, header http.Header, setup func(*websocket.Conn)) (*Client, *http.Response, error) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		return nil, resp, err
	}
	if setup != nil {
		setup(ws)
	}
	c := &Client{t: t, WS: ws, frames: make(chan Frame, 4096), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() { _ = ws.Close(); <-c.done })
	return c, resp, nil
}

func (c *Client) read() {
	defer close(c.done)
	for {
		_, data, err := c.WS.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		var parts []json.RawMessage
		if err := json.Unmarshal(data, &parts); err != nil || len(parts) < 2 {
			c.err = fmt.Errorf("edgetest: malformed server frame %s", data)
			return
		}
		f := Frame{Details: parts[1], Raw: data}
		_ = json.Unmarshal(parts[0], &f.Action)
		if len(parts) > 2 {
			f.Ref = parts[2]
		}
		select {
		case c.frames <- f:
		default:
			c.err = errors.New("edgetest: client frame buffer overflow")
			return
		}
	}
}

// Send writes [action, details] (or [action, details, ref] when ref is given).
func (c *Client) Send(action string, details any, ref ...any) {
	c.t.Helper()
	frame := []any{action, details}
	if len(ref) > 0 {
		frame = append(frame, ref[0])
	}
	data, err := json.Marshal(frame)
	if err != nil {
		c.t.Fatalf("marshal frame: %v", err)
	}
	c.SendRaw(data)
}

// TrySend is Send returning the error instead of failing the test, so that
// it is safe off the test goroutine (still one writer at a time).
func (c *Client) TrySend(action string, details any, ref ...any) error {
	frame := []any{action, details}
	if len(ref) > 0 {
		frame = append(frame, ref[0])
	}
	data, err := json.Marshal(frame)
	if err != nil {
		return err
	}
	return c.WS.WriteMessage(websocket.TextMessage, data)
}

// SendRaw writes one text frame as it is.
func (c *Client) SendRaw(data []byte) {
	c.t.Helper()
	if err := c.WS.WriteMessage(websocket.TextMessage, data); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

// Next returns the next frame, failing the test when the connection ends or
// no frame comes within Timeout.
func (c *Client) Next() Frame {
	c.t.Helper()
	f, ok := c.Take()
	if !ok {
		select {
		case <-c.done: // c.err is set before done is closed
			c.t.Fatalf("connection ended while waiting for a frame: %v", c.err)
		default:
			c.t.Fatal("no frame within the timeout")
		}
	}
	return f
}

// Expect returns the next frame and fails unless its action is action. A
// Server/recovery frame (sent right after ok when history is on, DESIGN §8)
// is skipped unless it is the action expected, so that tests of other
// promises read the same against an edge with or without history.
func (c *Client) Expect(action string) Frame {
	c.t.Helper()
	f := c.Next()
	if f.Action == "Server/recovery" && action != f.Action {
		f = c.Next()
	}
	if f.Action != action {
		c.t.Fatalf("got frame %s, want action %q", f, action)
	}
	return f
}

// Authenticate sends Client/authentication (with token when not empty) and
// expects "ok".
func (c *Client) Authenticate(token string) {
	c.t.Helper()
	var details any
	if token != "" {
		details = map[string]string{"token": token}
	}
	c.Send("Client/authentication", details)
	c.ExpectOK()
}

// ExpectOK expects ["Client/authentication","ok"].
func (c *Client) ExpectOK() {
	c.t.Helper()
	f := c.Expect("Client/authentication")
	if string(f.Details) != `"ok"` {
		c.t.Fatalf("authentication answer %s, want ok", f)
	}
}

// WaitClose waits until the edge closes the connection and returns the
// close code (websocket.CloseAbnormalClosure when there was no close frame).
// Frames still unread are discarded.
func (c *Client) WaitClose() (int, string) {
	c.t.Helper()
	for {
		select {
		case <-c.frames:
			continue
		case <-c.done:
		case <-time.After(Timeout):
			c.t.Fatal("connection not closed within the timeout")
		}
		break
	}
	var ce *websocket.CloseError
	if errors.As(c.err, &ce) {
		return ce.Code, ce.Text
	}
	return websocket.CloseAbnormalClosure, ""
}

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Eventually polls cond until it holds, failing the test after Timeout
// (testkit.Eventually).
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, what, cond)
}

// EventuallyWithin is Eventually with its own timeout, for what takes
// longer on a loaded machine than a message takes (a JetStream cluster
// electing its meta leader, say).
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.EventuallyWithin(t, timeout, what, cond)
}

// Take returns the next frame, or false when the connection ended or no
// frame came within Timeout. Unlike Next it is safe off the test goroutine.
func (c *Client) Take() (Frame, bool) {
	select {
	case f := <-c.frames:
		return f, true
	case <-c.done:
		select {
		case f := <-c.frames:
			return f, true
		default:
			return Frame{}, false
		}
	case <-time.After(Timeout):
		return Frame{}, false
	}
}
