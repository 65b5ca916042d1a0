// Package edge is the wsgate edge service: it accepts WebSocket connections,
// authenticates them, publishes what clients send to NATS and delivers what
// is published to them (DESIGN.md). cmd/edge runs it; other programs (the dev
// stack, tests) can embed it. docs/ARCHITECTURE.md maps a message's path
// through the internal packages and the goroutines Serve starts.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	jsclient "github.com/wsgate/wsgate/clients/js"
	"github.com/wsgate/wsgate/services/edge/internal/auth"
	"github.com/wsgate/wsgate/services/edge/internal/callout"
	"github.com/wsgate/wsgate/services/edge/internal/config"
	"github.com/wsgate/wsgate/services/edge/internal/gateway"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/edge/internal/hub"
	"github.com/wsgate/wsgate/services/edge/internal/inbound"
	"github.com/wsgate/wsgate/services/edge/internal/netpoll"
	"github.com/wsgate/wsgate/services/edge/internal/presence"
	"github.com/wsgate/wsgate/services/edge/internal/rooms"
	"github.com/wsgate/wsgate/services/edge/internal/stats"
	"github.com/wsgate/wsgate/services/edge/internal/wsconn"
	"github.com/wsgate/wsgate/services/internal/health"
	"github.com/wsgate/wsgate/services/internal/natsconn"
	"github.com/wsgate/wsgate/services/internal/presencekv"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Config is the edge's configuration (see .env.example).
type Config = config.Config

// LoadConfig reads the configuration from the environment.
func LoadConfig() (Config, error) { return config.Load() }

// shutdownMargin is added to the drain window for the last closes to finish.
const shutdownMargin = wsconn.CloseGrace + time.Second

// presenceStartTimeout bounds opening the presence bucket and taking the
// lease at start, and finishing the presence writes at shutdown.
const presenceStartTimeout = 10 * time.Second

// Option changes how New builds a Server.
type Option func(*Server)

// WithNATS makes the server use nc instead of connecting from the config.
// The caller keeps ownership: the server does not drain or close it.
func WithNATS(nc *nats.Conn) Option { return func(s *Server) { s.nc, s.ownNC = nc, false } }

// WithTelemetry makes the server record metrics and traces with t (which the
// caller shuts down) instead of setting up its own from the configuration.
func WithTelemetry(t *telemetry.Telemetry) Option {
	return func(s *Server) { s.tel, s.ownTel = t, false }
}

// WithHandler serves h at pattern (http.ServeMux syntax) next to the edge's
// own routes.
func WithHandler(pattern string, h http.Handler) Option {
	return func(s *Server) { s.extra = append(s.extra, route{pattern, h}) }
}

type route struct {
	pattern string
	h       http.Handler
}

// Server is one edge.
type Server struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	ownNC  bool
	tel    *telemetry.Telemetry
	ownTel bool
	extra  []route
	stats  *stats.Stats
	// unexport stops serving stats' delivery latency histogram on tel's
	// /metrics (which may outlive the server, see WithTelemetry).
	unexport func()

	probe   *health.Probe
	history *history.History // nil: history is off
	hub     *hub.Hub
	rooms   *rooms.Service
	poller  *netpoll.Poller
	gateway *gateway.Gateway
	inbound *inbound.Publisher // nil unless WS_INBOUND is on
	http    *http.Server
	ln      net.Listener

	// presence records connections in the presence bucket (nil: WS_PRESENCE=off).
	presence *presence.Writer
}

// New builds an edge from cfg; it connects to NATS (in the background when
// NATS is not reachable yet) unless WithNATS is given.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Normalize(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, ownNC: true, ownTel: true}
	for _, o := range opts {
		o(s)
	}
	if s.tel == nil {
		t, err := telemetry.Setup(context.Background(), cfg.OTLP, "edge")
		if err != nil {
			return nil, err
		}
		s.tel = t
	}
	if err := s.build(); err != nil {
		s.release()
		return nil, err
	}
	return s, nil
}

// build is the part of New after telemetry: when it fails, New releases
// what was set up.
func (s *Server) build() error {
	cfg, log := s.cfg, s.log
	verifier, err := auth.NewVerifier(auth.Config{
		Secret: cfg.JWTSecret, PublicKeyFile: cfg.JWTPublicKeyFile,
		Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience,
		JWKSURL: cfg.JWTJWKSURL, JWKSRefresh: cfg.JWKSRefresh, JWKSMinInterval: cfg.JWKSMinInterval,
		Logger: log,
	})
	if err != nil {
		return err
	}
	s.stats = stats.New(s.tel.Meter, func() (int64, int64, int64) { return s.hub.Counts() })
	s.unexport = s.tel.AddProducer(s.stats)
	var reconnects natsHooks // the NATS hooks may fire before the gateway exists
	if s.nc == nil {
		s.nc, err = natsconn.Connect(cfg.Config, "wsgate-edge "+cfg.ID, log, natsconn.Hooks{
			Reconnected:  func() { s.stats.NATSReconnected(); reconnects.reconnected() },
			Disconnected: func(error) { reconnects.disconnected() },
		})
		if err != nil {
			return err
		}
	}
	if err := natsconn.ObserveConnected(s.tel.Meter, "wsgate.edge.nats.connected", s.nc); err != nil {
		return fmt.Errorf("edge: nats gauge: %w", err)
	}
	subjects := wire.NewSubjects(cfg.Prefix)
	if s.history, err = newHistory(cfg, s.nc, subjects, log, s.tel); err != nil {
		return err
	}
	var members *rooms.Store
	hcfg := hub.Config{
		EdgeID: cfg.ID, Subjects: subjects, PingInterval: cfg.PingInterval, MaxPerUser: cfg.MaxPerUser,
		AuthTimeout: cfg.AuthTimeout, Logger: log, Stats: s.stats, Tracer: s.tel.Tracer,
		History: s.history != nil,
	}
	if cfg.PresenceOn() {
		if members, err = rooms.NewStore(s.nc, cfg.MembersBucket, cfg.Presence == "file"); err != nil {
			return err
		}
		hcfg.Memberships = members
	}
	// Presence records a connection's groups: a join or leave rewrites
	// its record (s.presence is set below, before any connection).
	hcfg.GroupsChanged = func(c *hub.Client) {
		if s.presence != nil {
			s.presence.Changed(c)
		}
	}
	s.hub = hub.New(s.nc, hcfg)
	s.rooms = rooms.New(s.nc, s.hub, rooms.Config{
		EdgeID: cfg.ID, Subjects: subjects, Store: members, Logger: log, Meter: s.tel.Meter,
	})
	var ask *callout.Client
	if cfg.CalloutSubject != "" {
		ask = callout.New(s.nc, callout.Config{
			Subject: cfg.CalloutSubject, Timeout: cfg.CalloutTimeout,
			CacheSize: cfg.CalloutCacheSize, CacheTTL: cfg.CalloutCacheTTL, Logger: log,
		})
	}
	// One epoll instance watches idle connections (Linux); elsewhere each
	// connection parks a goroutine.
	s.poller = netpoll.New()
	if s.poller.Portable() {
		log.Info("no epoll: one parked goroutine per idle connection")
	}
	var rec gateway.Presence
	if cfg.Presence != presencekv.Off {
		s.presence, err = presence.New(s.nc, presence.Config{
			EdgeID: cfg.ID, Bucket: cfg.PresenceBucket, Mode: cfg.Presence,
			Lease: cfg.PresenceLease, Logger: log, Meter: s.tel.Meter,
			// The dispatchers reaped this edge's connections: they
			// reconnect (1012) and are recorded again.
			OnLeaseLost: func() {
				s.hub.CloseAll(context.Background(), wire.CloseRestart, "presence lease lost", 0)
			},
		})
		if err != nil {
			return err
		}
		rec = s.presence
	}
	if cfg.InboundOn() {
		if s.inbound, err = inbound.NewPublisher(s.nc, inbound.DefaultTimeout, s.tel.Meter); err != nil {
			return err
		}
	}
	s.gateway = gateway.New(gateway.Config{
		EdgeID: cfg.ID, Subjects: subjects, AllowedOrigins: cfg.AllowedOrigins,
		AllowAnonymous: cfg.AllowAnonymous, AuthCookie: cfg.AuthCookie,
		MaxMessageBytes: cfg.MaxMessageBytes, SendQueue: cfg.SendQueue,
		RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		MaxConnections: cfg.MaxConnections, HandshakeTimeout: cfg.HandshakeTimeout,
		AuthConcurrency: cfg.AuthConcurrency, AuthQueue: cfg.AuthQueue,
		Callout: ask, Poller: s.poller, Logger: log, Stats: s.stats, Tracer: s.tel.Tracer,
		Presence:    rec,
		Inbound:     s.inbound,
		History:     s.history,
		Compression: cfg.Compression == "on",
	}, s.hub, s.nc, verifier)
	reconnects.rooms.Store(s.rooms)
	reconnects.gw.Store(s.gateway)
	s.probe = health.New(func() error {
		if !s.nc.IsConnected() {
			return errors.New("nats is not connected")
		}
		if s.history != nil {
			return s.history.Ready()
		}
		return nil
	})
	if err := s.probe.Observe(s.tel.Meter, "wsgate.edge.ready"); err != nil {
		return fmt.Errorf("edge: ready gauge: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(cfg.Path, s.gateway)
	client := jsclient.Handler(cfg.Path)
	mux.Handle("GET /client.js", client)
	mux.Handle("GET /client.mjs", client)
	mux.Handle("GET /wsgate-worker.js", client)
	s.probe.Register(mux)
	mux.Handle("GET /metrics", s.tel.MetricsHandler())
	for _, r := range s.extra {
		mux.Handle(r.pattern, r.h)
	}
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return nil
}

// release closes what the server owns that Serve's shutdown would have
// closed, for a server that never served: its NATS connection and its
// telemetry (each when the server set it up itself).
func (s *Server) release() {
	if s.unexport != nil {
		s.unexport()
	}
	if s.ownNC && s.nc != nil {
		s.nc.Close()
	}
	if s.ownTel && s.tel != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.tel.Shutdown(ctx); err != nil {
			s.log.Warn("telemetry shutdown", "err", err)
		}
	}
}

// Listen binds EDGE_ADDR; Addr is known afterwards.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("EDGE_ADDR %q: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// ID is the edge id, as used in subjects and connection ids.
func (s *Server) ID() string { return s.cfg.ID }

// Run listens and serves until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Serve serves on the bound listener until ctx is done, then shuts down:
// readiness off, no new connections, clients closed with 1012 spread over
// EDGE_DRAIN_TIMEOUT, NATS drained.
func (s *Server) Serve(ctx context.Context) error {
	// abort releases what Serve started when it cannot go on.
	abort := func(err error) error {
		s.hub.Stop() // the subjects subscribed before the failure
		_ = s.ln.Close()
		go s.poller.Run() // Close stops Run and waits for it: then the epoll descriptor is released
		s.poller.Close()
		s.release()
		return err
	}
	if err := s.hub.Start(); err != nil {
		return abort(err)
	}
	if s.presence != nil {
		pctx, cancel := context.WithTimeout(ctx, presenceStartTimeout)
		err := s.presence.Start(pctx)
		cancel()
		if err != nil {
			return abort(fmt.Errorf("WS_PRESENCE: %w", err))
		}
	}
	hubCtx, stopHub := context.WithCancel(context.Background())
	// Announced before the first connection is accepted (package rooms).
	if err := s.rooms.Start(hubCtx); err != nil {
		stopHub()
		return abort(err)
	}
	var wg sync.WaitGroup
	if s.history != nil {
		s.startHistory(hubCtx, &wg)
	}
	wg.Add(2)
	go func() { defer wg.Done(); s.hub.Run(hubCtx) }()
	go func() { defer wg.Done(); s.rooms.Run(hubCtx) }()
	wg.Add(1)
	go func() { defer wg.Done(); s.poller.Run() }()
	if s.inbound != nil {
		wg.Add(1)
		go func() { defer wg.Done(); s.ensureInbound(hubCtx) }()
	}

	serveErr := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); serveErr <- s.http.Serve(s.ln) }()
	s.log.Info("edge listening", "addr", s.ln.Addr().String(), "path", s.cfg.Path, "edge", s.cfg.ID)

	var err error
	select {
	case err = <-serveErr:
		err = fmt.Errorf("http serve: %w", err)
	case <-ctx.Done():
	}
	s.shutdown()
	stopHub()
	s.poller.Close() // every connection has ended: nothing is armed
	wg.Wait()
	return err
}

func (s *Server) shutdown() {
	s.probe.SetDraining()
	s.gateway.Drain()
	s.log.Info("edge draining", "connections", s.hub.Len(), "window", s.cfg.DrainTimeout.String())

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout+shutdownMargin)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.log.Warn("http shutdown", "err", err)
	}
	s.hub.CloseAll(ctx, wire.CloseRestart, "edge is restarting", s.cfg.DrainTimeout)
	if err := s.gateway.Wait(ctx); err != nil {
		s.log.Warn("connections did not close in time; aborting them", "left", s.hub.Len())
		s.hub.AbortAll()
		_ = s.gateway.Wait(context.Background())
	}
	s.rooms.Stop()
	if s.presence != nil {
		// Every connection has ended: its record goes, then the lease.
		pctx, pcancel := context.WithTimeout(context.Background(), presenceStartTimeout)
		s.presence.Close(pctx)
		pcancel()
	}
	s.hub.Stop()
	if s.inbound != nil {
		// No connection publishes any more; the last events get their answers.
		ictx, icancel := context.WithTimeout(context.Background(), inbound.DefaultTimeout)
		s.inbound.Close(ictx)
		icancel()
	}
	if s.ownNC {
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if err := natsconn.Drain(dctx, s.nc); err != nil {
			s.log.Warn("nats drain", "err", err)
		}
	}
	s.unexport()
	if s.ownTel {
		tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer tcancel()
		if err := s.tel.Shutdown(tctx); err != nil {
			s.log.Warn("telemetry shutdown", "err", err)
		}
	}
	s.log.Info("edge stopped")
}

// natsHooks hands NATS connection changes to the gateway (history
// catch-ups, DESIGN.md §8) and to rooms (stored joins, §9) once they exist.
type natsHooks struct {
	gw    atomic.Pointer[gateway.Gateway]
	rooms atomic.Pointer[rooms.Service]
}

func (h *natsHooks) disconnected() {
	if g := h.gw.Load(); g != nil {
		g.NATSDisconnected()
	}
}

func (h *natsHooks) reconnected() {
	if r := h.rooms.Load(); r != nil {
		r.Reconnected()
	}
	if g := h.gw.Load(); g != nil {
		g.NATSReconnected()
	}
}
