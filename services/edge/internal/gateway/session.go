package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// session is one connection's reader. Its fields are owned by the goroutine
// that reads for the connection (one at a time: see Readable), except what
// hub.Client shares.
type session struct {
	g              *Gateway
	c              *hub.Client
	r              *wsconn.Reader
	sock           net.Conn
	acceptLanguage string
	callout        *wire.CalloutRequest // the upgrade's credentials, when a callout is configured
	msgSeq         uint64
	ignored        int    // frames read after our close frame was queued
	pollToken      uint64 // this session's token with the poller
	armed          bool   // the socket is registered with the poller

	lastBad time.Time // when the last bad frame arrived

	since    *wire.Since // the position to recover from (history on), from the upgrade or the first authentication
	sinceBad bool        // a since was given but malformed

	limit limiter // the frames it may send (EDGE_RATE_LIMIT, EDGE_RATE_BURST)

	unacked atomic.Int32 // reliable frames waiting for the inbound stream (reliable.go)
}

// maxIgnoredAfterClose: frames a closing connection may still send before
// the edge stops reading it and tears it down.
const maxIgnoredAfterClose = 64

func (g *Gateway) newSession(sock net.Conn, r *http.Request) (*session, error) {
	rd, err := wsconn.NewReader(sock, int(g.cfg.MaxMessageBytes))
	if err != nil {
		return nil, err
	}
	s := &session{g: g, r: rd, sock: sock, acceptLanguage: r.Header.Get("Accept-Language"), limit: newLimiter(g.cfg.RateBurst)}
	id := g.boot + "-" + strconv.FormatUint(g.seq.Add(1), 36)
	var conn *wsconn.Conn
	conn = wsconn.New(sock, g.cfg.SendQueue, g.cfg.Stats.Shard(), func(err error) {
		// The writer failed, or finished with a close frame: the reader
		// finds out through the end of input, or the hub's timer aborts
		// the connection when the peer does not answer in time.
		if wsconn.IsClosedByUs(err) {
			g.hub.CloseSent(s.c)
		} else {
			conn.Abort()
		}
	})
	s.c = hub.NewClient(conn, g.cfg.EdgeID, id, wsconn.RemoteIP(sock.RemoteAddr()), r.UserAgent(), r.Header.Get("Origin"))
	if g.cfg.Callout != nil {
		s.callout = calloutRequest(g.cfg.EdgeID, r)
	}
	if q := r.URL.Query(); g.cfg.History != nil && q.Has("since") {
		s.setSince(wire.ParseSinceQuery(q.Get("since")))
	}
	return s, nil
}

// calloutRequest collects what the application may need to recognise the
// connection: cookies, selected headers and the peer address.
func calloutRequest(edgeID string, r *http.Request) *wire.CalloutRequest {
	req := &wire.CalloutRequest{Edge: edgeID, RemoteAddr: r.RemoteAddr, Headers: map[string]string{}}
	for _, h := range []string{"User-Agent", "Origin", "Accept-Language", "X-Forwarded-For", "X-Real-Ip"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Headers[h] = strings.Join(v, ", ")
		}
	}
	if cookies := r.Cookies(); len(cookies) > 0 {
		req.Cookies = make(map[string]string, len(cookies))
		for _, c := range cookies {
			req.Cookies[c.Name] = c.Value
		}
	}
	return req
}

// serve starts the connection, which the gateway has registered with the
// hub; token is the upgrade's, if any.
func (s *session) serve(token string) {
	s.pollToken = s.g.cfg.Poller.Register(s)
	if s.c.Conn.CloseCode() == 0 && (token != "" || (s.callout != nil && len(s.callout.Cookies) > 0)) {
		s.authenticate(token)
	}
	s.Readable()
}

// Readable handles what the socket has, then asks the poller to call again
// when there is more: between messages no goroutine waits for the
// connection (with epoll), and no read buffer is held.
func (s *session) Readable() {
	drained := false // the last read of this call took all the socket had
	for {
		code, ended := s.readAvailable()
		if ended {
			s.finish(code)
			return
		}
		if !drained {
			more, err := s.r.Fill()
			if err != nil {
				s.finish(s.endCode(0))
				return
			}
			if more {
				drained = s.r.Drained()
				continue
			}
		}
		// Marked before arming: once armed, another goroutine may run this.
		first := !s.armed
		s.armed = true
		readAgain, err := s.g.cfg.Poller.Arm(s.r.RawConn(), s.pollToken, first)
		if err != nil {
			// Shutting down (or the socket is gone): nobody would read.
			s.c.Conn.Abort()
			s.finish(s.endCode(0))
			return
		}
		if !readAgain {
			return
		}
		drained = false // bytes came meanwhile
	}
}

// readAvailable handles every frame the socket has now. It reports the end
// of the connection with the close code to count (0: the one we sent).
func (s *session) readAvailable() (code int, ended bool) {
	conn := s.c.Conn
	for {
		m, ok, err := s.r.Next()
		// Invalid input fails the connection (RFC 6455 §7.1.7): our close
		// frame goes out, then the socket is closed, and nothing after the
		// violating frame is read.
		switch {
		case errors.Is(err, wsconn.ErrTooLarge):
			return s.fail(wire.CloseTooLarge, "message too big"), true
		case errors.Is(err, wsconn.ErrInvalidUTF8):
			s.g.cfg.Stats.BadFrame()
			return s.fail(wire.CloseInvalidUTF8, "text is not valid UTF-8"), true
		case errors.Is(err, wsconn.ErrProtocol):
			s.g.cfg.Stats.BadFrame()
			return s.fail(wire.CloseProtocolError, strings.TrimPrefix(err.Error(), "wsconn: ")), true
		case err != nil:
			return s.endCode(0), true
		case !ok:
			return 0, false
		}
		conn.Touch()
		switch m.Op {
		case wsconn.OpPing:
			_ = conn.Pong(m.Data)
			continue
		case wsconn.OpPong:
			continue
		case wsconn.OpClose:
			peer, valid := wsconn.ParseClose(m.Data)
			if !valid {
				s.g.cfg.Stats.BadFrame()
				return s.fail(wire.CloseProtocolError, "bad close frame"), true
			}
			// Our close frame first and this the answer, or the peer's
			// first and we answer it.
			s.close(peer, "")
			return s.endCode(peer), true
		}
		if conn.CloseCode() != 0 {
			// Closing: the peer's close frame is all we wait for. A peer
			// that keeps sending instead (a flood) is not worth reading.
			if s.ignored++; s.ignored > maxIgnoredAfterClose {
				return s.endCode(0), true
			}
			continue
		}
		s.g.cfg.Stats.Read(len(m.Data))
		if m.Op != wsconn.OpText {
			s.g.cfg.Stats.BadFrame()
			return s.fail(wire.CloseUnsupportedData, "binary messages are not accepted"), true
		}
		s.handle(m.Data)
	}
}

// endCode is the close code a connection ended with: ours when we sent one,
// else the peer's, else 1006 (no close frame at all).
func (s *session) endCode(peer int) int {
	if code := s.c.Conn.CloseCode(); code != 0 {
		return code
	}
	if peer != 0 {
		return peer
	}
	return wire.CloseAbnormal
}

// fail queues a close frame for invalid input and returns the code the
// connection ends with (ours, unless a close was already under way).
func (s *session) fail(code int, reason string) int {
	s.close(code, reason)
	return s.endCode(0)
}

// finish tears the connection down and publishes its end.
func (s *session) finish(code int) {
	g, conn := s.g, s.c.Conn
	g.hub.Remove(s.c)
	g.cfg.Poller.Forget(s.pollToken)
	if conn.CloseCode() != 0 {
		// A close frame is queued (ours, or the answer to the peer's):
		// let it go out before the socket is shut down.
		conn.Linger(wsconn.CloseGrace)
	}
	// Abort, unlike closing the socket alone, also stops the queue taking
	// frames, so no writer can start (say, from a concurrent CloseAll)
	// after Wait has begun.
	conn.Abort()
	conn.Wait()
	_ = s.sock.Close()
	g.cfg.Stats.Closed(code)
	if id := s.c.Identity(); id != nil {
		details, _ := json.Marshal(map[string]int{"code": code})
		ended := func() { s.publishEvent(wire.ActionDisconnection, details, eventDisconnection) }
		if p := g.cfg.Presence; p != nil && id.User != "" {
			p.Remove(s.c, ended)
		} else {
			ended()
		}
	}
	g.conns.Done()
	g.reserved.Add(-1)
}

func (s *session) handle(data []byte) {
	if !s.allow() {
		return
	}
	f, err := wire.ParseClientFrame(data)
	if err != nil {
		s.bad(strings.TrimPrefix(err.Error(), wire.ErrBadFrame.Error()+": "))
		return
	}
	switch {
	case f.Action == wire.ActionAuthentication:
		s.onAuthentication(f)
	case f.Action == wire.ActionPing:
		s.send(wire.AppendServerFrame(nil, wire.ActionPong, nil, f.Ref))
	case strings.HasPrefix(f.Action, wire.ReservedClient), strings.HasPrefix(f.Action, wire.ReservedServer):
		s.clientError(wire.CodeBadRequest, "action "+f.Action+" is reserved")
	case s.c.Identity() == nil:
		s.clientError(wire.CodeUnauthorized, "not authenticated: send Client/authentication first")
	case f.ID != "":
		s.publishReliable(f)
	default:
		if err := s.publish(f.Action, f.Details, f.Ref); err != nil {
			s.send(wire.AppendServerFrame(nil, wire.ErrorAction(f.Action), errorDetails(wire.CodeUnavailable, "not delivered: messaging is unavailable"), f.Ref))
		}
	}
}

// allow applies the connection's rate limit. The first frame over the
// limit gets Client/error 429; a client that keeps going is closed 4429.
func (s *session) allow() bool {
	if s.g.cfg.RateLimit <= 0 {
		return true
	}
	ok, dropped := s.limit.take(time.Now(), s.g.cfg.RateLimit, s.g.cfg.RateBurst)
	if ok {
		return true
	}
	s.g.cfg.Stats.RateLimited()
	switch {
	case dropped == 1:
		s.clientError(wire.CodeTooManyRequests, "rate limit exceeded: frames are being dropped")
	case dropped > s.g.cfg.RateBurst:
		s.close(wire.CloseRateLimited, "rate limit exceeded")
	}
	return false
}

// bad answers a frame that breaks the protocol; the second one within
// badFrameWindow closes the connection with 1008.
func (s *session) bad(reason string) {
	s.g.cfg.Stats.BadFrame()
	now := time.Now()
	if !s.lastBad.IsZero() && now.Sub(s.lastBad) < badFrameWindow {
		s.close(wire.ClosePolicy, reason)
		return
	}
	s.lastBad = now
	s.clientError(wire.CodeBadRequest, reason)
}

// publish sends an inbound envelope for this connection to <prefix>.in.<action>.
// envelopeSize is about what an envelope takes besides its details, ref
// and user agent, so that encoding it allocates once.
const envelopeSize = 384

func (s *session) publish(action string, details, ref json.RawMessage) error {
	return s.publishVia(action, details, ref, nil)
}

// publishVia is publish, with via (when not nil) sending the message
// instead of a core NATS publish: it may change the subject and headers.
func (s *session) publishVia(action string, details, ref json.RawMessage, via func(*nats.Msg) error) error {
	id := s.c.Identity()
	if len(details) == 0 {
		details = json.RawMessage("null")
	}
	env := wire.Envelope{
		Action: action, Details: details, Ref: ref,
		User: id.User, Session: id.Session, Groups: s.c.Groups(), Language: id.Language,
		Connection: s.c.Connection, Edge: s.g.cfg.EdgeID,
		IP: s.c.IP, UserAgent: s.c.UserAgent, TS: time.Now().UTC(),
	}
	data := wire.AppendEnvelope(make([]byte, 0, envelopeSize+len(details)+len(ref)+len(s.c.UserAgent)), &env)
	s.msgSeq++
	msg := &nats.Msg{
		Subject: s.g.cfg.Subjects.In(action),
		Data:    data,
		Header:  nats.Header{wire.HeaderMsgID: []string{s.c.Connection + "." + strconv.FormatUint(s.msgSeq, 36)}},
	}
	// The trace of a client's message starts here; its context travels in
	// the NATS headers to the handler and back with the reply. Without
	// tracing, none of it is built (a no-op span still costs allocations).
	ctx, span := context.Background(), trace.SpanFromContext(context.Background())
	if s.g.tracing {
		ctx, span = s.g.cfg.Tracer.Start(ctx, "ws receive "+action,
			trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(attribute.String("wsgate.connection", s.c.Connection), attribute.String("wsgate.user", id.User)))
		propagation.TraceContext{}.Inject(ctx, telemetry.NATSHeader(msg.Header))
	}
	defer span.End()
	send := s.g.nc.PublishMsg
	if via != nil {
		send = via
	}
	if err := send(msg); err != nil {
		span.RecordError(err)
		s.g.cfg.Stats.PublishFailed()
		s.g.cfg.Logger.WarnContext(ctx, "publish inbound", "conn", s.c.Connection, "user", id.User, "action", action, "err", err)
		return err
	}
	return nil
}

// send frames payload and queues it; the reader writes it at once when the
// socket takes it.
func (s *session) send(payload []byte) {
	if err := s.c.Conn.Send(wsconn.TextFrame(payload)); errors.Is(err, wsconn.ErrQueueFull) {
		s.g.cfg.Stats.SlowConsumer()
	}
}

func (s *session) clientError(code int, reason string) {
	s.send(wire.ErrorFrame(wire.ActionClientError, code, reason))
}

// close queues a close frame (wsconn cuts reason to fit, at a rune boundary).
func (s *session) close(code int, reason string) {
	s.c.Conn.Close(code, reason)
}

func errorDetails(code int, message string) json.RawMessage {
	d, _ := json.Marshal(wire.Error{Code: code, Message: message})
	return d
}
