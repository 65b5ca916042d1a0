// Package gateway accepts WebSocket connections and reads each one:
// authentication, frame validation, and publishing of inbound envelopes and
// lifecycle events to NATS. gateway.go has the upgrade (ServeHTTP); session.go
// the connection: Readable reads its frames when the poller (package netpoll)
// says the socket is readable, handle validates each, publish sends it to NATS.
package gateway

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/callout"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/edge/internal/inbound"
	"github.com/wsgate/wsgate/services/edge/internal/netpoll"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
)

// Buffer sizes of the upgrader, which only answers the handshake: wsconn
// reads and writes every frame after it.
const (
	readBufferSize  = 256
	writeBufferSize = 1024
	// badFrameWindow: a second bad frame within it closes with 1008.
	badFrameWindow = time.Minute
	// authPublishTimeout bounds the wait for the NATS server to confirm a
	// new connection's subscriptions.
	authPublishTimeout = 5 * time.Second
)

// Config is what the gateway needs to know.
type Config struct {
	EdgeID           string
	Subjects         wire.Subjects
	AllowedOrigins   []string
	AllowAnonymous   bool
	AuthCookie       string
	MaxMessageBytes  int64
	SendQueue        int
	RateLimit        float64
	RateBurst        int
	MaxConnections   int
	HandshakeTimeout time.Duration
	// AuthConcurrency bounds the authentications in progress (0: no
	// bound); AuthQueue bounds those waiting for one to end.
	AuthConcurrency int
	AuthQueue       int
	// Callout, when set, identifies connections whose token the verifier
	// cannot check (or that have only cookies) by asking the application.
	Callout *callout.Client
	// Poller watches idle connections' sockets (nil: a portable one).
	Poller *netpoll.Poller
	Logger *slog.Logger
	Stats  *stats.Stats
	Tracer trace.Tracer // nil: no tracing
	// Presence, when set, records connections of users (WS_PRESENCE).
	Presence Presence
	// Inbound, when set, stores frames that carry a message id in the
	// inbound stream, and lifecycle events with them (DESIGN.md §8).
	Inbound *inbound.Publisher
	// History, when set, recovers each connection right after its ok
	// (DESIGN.md §8); nil: history is off.
	History *history.History
	// Compression negotiates permessage-deflate with clients that offer it.
	Compression bool
}

// Gateway is the http.Handler of the WebSocket endpoint.
type Gateway struct {
	cfg      Config         // static
	hub      Registry       // static: a *hub.Hub
	nc       Publisher      // static: a *nats.Conn
	verifier *auth.Verifier // static
	upgrader websocket.Upgrader
	boot     string // static: random prefix of this process's connection ids
	tracing  bool   // static: cfg.Tracer records spans (it is not a no-op)

	auths    *authBudget   // static
	seq      atomic.Uint64 // connection counter
	reserved atomic.Int64  // connections admitted, for MaxConnections
	draining atomic.Bool
	conns    sync.WaitGroup // one per connection being served
	// admitMu orders each upgraded connection's registration with the hub
	// against Drain: a connection registered before Drain is in the hub
	// when shutdown closes them all; one that comes after is closed 1012
	// by the gateway itself.
	admitMu sync.Mutex
	catchUp catchUp // history catch-ups after NATS reconnections
}

// New returns a gateway; verifier may have no keys when only anonymous
// connections are allowed.
func New(cfg Config, h Registry, nc Publisher, verifier *auth.Verifier) *Gateway {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = stats.New(nil, nil)
	}
	_, noop := cfg.Tracer.(tracenoop.Tracer)
	tracing := cfg.Tracer != nil && !noop
	if cfg.Tracer == nil {
		cfg.Tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	if cfg.Poller == nil {
		cfg.Poller = netpoll.NewPortable() // arms without Run
	}
	g := &Gateway{cfg: cfg, hub: h, nc: nc, verifier: verifier, boot: bootID(), tracing: tracing,
		auths: newAuthBudget(cfg.AuthConcurrency, cfg.AuthQueue)}
	g.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.HandshakeTimeout,
		ReadBufferSize:   readBufferSize,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  &sync.Pool{},
		CheckOrigin:      originChecker(cfg.AllowedOrigins),
	}
	return g
}

func bootID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	return strconv.FormatUint(n, 36)
}

// originChecker allows the listed origins ("*" = any; a "*." host part
// matches subdomains); with none listed, requests without an Origin
// (non-browser clients) and same-host origins.
func originChecker(allowed []string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		origin := r.Header.Get("Origin")
		if len(allowed) == 0 {
			if origin == "" {
				return true
			}
			u, err := url.Parse(origin)
			return err == nil && strings.EqualFold(u.Host, r.Host)
		}
		for _, a := range allowed {
			a = strings.TrimSpace(a)
			if a == "*" || strings.EqualFold(a, origin) {
				return true
			}
			if ok, _ := path.Match(strings.ToLower(a), strings.ToLower(origin)); ok && strings.Contains(a, "*.") {
				return true
			}
		}
		return false
	}
}

// Drain makes the gateway refuse new connections with 503. When it returns,
// every connection upgraded before is registered with the hub, and those
// still in their upgrade are closed 1012 as soon as it completes.
func (g *Gateway) Drain() {
	g.admitMu.Lock()
	g.draining.Store(true)
	g.admitMu.Unlock()
}

// register adds a freshly upgraded connection to the hub, unless the edge
// is draining: then it is registered and closed 1012 at once, as the drain
// would have closed it had it come a moment earlier. It reports whether the
// connection may go on.
func (g *Gateway) register(s *session) bool {
	g.admitMu.Lock()
	defer g.admitMu.Unlock()
	g.hub.Add(s.c)
	if g.draining.Load() {
		g.cfg.Stats.Refused("draining")
		s.close(wire.CloseRestart, "edge is restarting")
		return false
	}
	return true
}

// Wait waits until every connection's handler has returned or ctx is done.
func (g *Gateway) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { g.conns.Wait(); g.catchUp.stop(); g.catchUp.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServeHTTP upgrades the request and hands the connection to its own reader
// goroutine: returning lets net/http free the request's buffers, which an
// idle WebSocket would otherwise hold for its whole life.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.draining.Load() {
		g.cfg.Stats.Refused("draining")
		http.Error(w, "edge is shutting down", http.StatusServiceUnavailable)
		return
	}
	if !g.nc.IsConnected() {
		// Without NATS a client could not be confirmed its subscriptions,
		// nor could its messages go anywhere: it should try another edge.
		g.cfg.Stats.Refused("unavailable")
		http.Error(w, "edge has no messaging connection", http.StatusServiceUnavailable)
		return
	}
	if n := g.reserved.Add(1); g.cfg.MaxConnections > 0 && n > int64(g.cfg.MaxConnections) {
		g.reserved.Add(-1)
		g.cfg.Stats.Refused("full")
		http.Error(w, "edge is at its connection limit", http.StatusServiceUnavailable)
		return
	}
	if !g.upgrader.CheckOrigin(r) {
		g.reserved.Add(-1)
		g.cfg.Stats.Refused("origin")
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	g.conns.Add(1)
	deflate, compress := g.negotiateDeflate(r)
	ws, err := g.upgrader.Upgrade(w, r, deflate.header)
	if err != nil {
		g.conns.Done()
		g.reserved.Add(-1)
		g.cfg.Stats.Refused("handshake")
		return // the upgrader has answered with the HTTP error
	}
	g.cfg.Stats.Opened()
	// From here on the connection is read and written by wsconn; the
	// library's Conn, buffers included, is left to the collector.
	s, err := g.newSession(ws.NetConn(), r)
	if err != nil {
		g.cfg.Logger.Error("websocket connection", "err", err)
		_ = ws.NetConn().Close()
		g.conns.Done()
		g.reserved.Add(-1)
		return
	}
	if compress {
		s.r.SetDeflate(deflate.Deflate)
		s.c.Conn.SetDeflate()
		g.cfg.Stats.CompressedConnection()
	}
	token := ""
	if g.register(s) {
		token = auth.TokenFromRequest(r, g.cfg.AuthCookie)
	}
	go s.serve(token) // s.finish ends it
}
