// Package service is the dispatcher service as a library: cmd/dispatcher runs
// it, and a dev binary can embed it in-process, on its own NATS connection.
// Run connects to NATS, serves the built-in handlers (hello, echo, chat), the
// HTTP routes of DISPATCHER_ROUTES_FILE and any handlers added with
// WithHandlers, and serves /healthz, /readyz, /metrics, GET /v1/routes and,
// when DISPATCHER_API_KEYS is set, the HTTP send API (POST /v1/send,
// /v1/close) on DISPATCHER_ADDR until its context is cancelled; then it
// drains.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/dispatcher/internal/config"
	"github.com/wsgate/wsgate/services/dispatcher/internal/handlers"
	"github.com/wsgate/wsgate/services/dispatcher/internal/routes"
	"github.com/wsgate/wsgate/services/dispatcher/internal/sendapi"
	"github.com/wsgate/wsgate/services/internal/health"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/natsconn"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Config is the dispatcher service's configuration (DESIGN.md §6). Build it
// with LoadConfig, or in code (Run checks it either way).
type Config = config.Config

// LoadConfig reads Config from the environment. Its error is one line that
// names the variable at fault.
func LoadConfig() (Config, error) { return config.Load() }

// DrainTimeout bounds the shutdown: in-flight handlers, the NATS drain and
// the HTTP server together. A pod's termination grace period must be longer.
const DrainTimeout = 20 * time.Second

// Timing of the HTTP server: probes, metrics and the small JSON requests of
// the send API.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = 60 * time.Second
	// startRetry is the pause between attempts to subscribe while NATS is
	// unreachable (natsconn keeps reconnecting meanwhile).
	startRetry = time.Second
)

// connName is the NATS connection name, as the server's monitoring shows it.
const connName = "wsgate-dispatcher"

// Option changes how Run runs.
type Option func(*options)

type options struct {
	tracer   trace.Tracer
	conn     *nats.Conn
	onListen func(net.Addr)
	register []func(*dispatcher.Dispatcher) error
}

// WithConn makes Run use nc instead of connecting from cfg's NATS settings.
// The caller keeps ownership: Run drains its own subscriptions but neither
// drains nor closes nc.
func WithConn(nc *nats.Conn) Option {
	return func(o *options) { o.conn = nc }
}

// WithTracer traces handled messages with t instead of a tracer built from
// the OTEL_EXPORTER_OTLP_* configuration.
func WithTracer(t trace.Tracer) Option {
	return func(o *options) { o.tracer = t }
}

// OnListen makes Run call f with the HTTP server's address once it listens;
// with DISPATCHER_ADDR "127.0.0.1:0" that is how to learn the port.
func OnListen(f func(addr net.Addr)) Option {
	return func(o *options) { o.onListen = f }
}

// WithHandlers makes Run call register, after the built-in handlers are
// registered and before it subscribes, to add more handlers to the dispatcher.
func WithHandlers(register func(d *dispatcher.Dispatcher) error) Option {
	return func(o *options) { o.register = append(o.register, register) }
}

// Probe failures of /readyz.
var (
	errNotConnected  = errors.New("not connected to NATS")
	errNotSubscribed = errors.New("not subscribed yet")
)

// Run runs the dispatcher service until ctx is cancelled, then shuts down in
// order: readiness off, drain the dispatcher (in-flight handlers finish),
// drain NATS, stop HTTP; the whole within DrainTimeout. It returns nil after a
// clean shutdown. log may be nil (discard).
func Run(ctx context.Context, cfg Config, log *slog.Logger, opts ...Option) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	log.Info("dispatcher starting", logging.Attrs(cfg)...)
	var telOpts []telemetry.Option
	if o.tracer != nil {
		// The given tracer replaces the OTLP one: build none.
		telOpts = append(telOpts, telemetry.WithTracerProvider(noop.NewTracerProvider()))
	}
	tel, err := telemetry.Setup(ctx, cfg.OTLP, "dispatcher", telOpts...)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()
	if o.tracer == nil {
		o.tracer = tel.Tracer
	}

	// A bad routes file stops the start before anything connects.
	var table *routes.Table
	if cfg.RoutesFile != "" {
		if table, err = routes.Load(cfg.RoutesFile); err != nil {
			return fmt.Errorf("DISPATCHER_ROUTES_FILE: %w", err)
		}
		if cfg.InboundOn() {
			ackWait := cfg.AckWait
			if ackWait == 0 {
				ackWait = dispatcher.DefaultAckWait // the SDK's default, as WithReliable applies it
			}
			if err := table.FitsAckWait(ackWait); err != nil {
				return fmt.Errorf("DISPATCHER_ROUTES_FILE: %w", err)
			}
		}
	}

	nc, ownConn := o.conn, o.conn == nil
	if ownConn {
		nc, err = natsconn.Connect(cfg.Config, connName, log, natsconn.Hooks{})
		if err != nil {
			return err
		}
	}
	// closeConn releases our own connection on the error paths before
	// serving; once serving, shutdown drains it instead.
	closeConn := func() {
		if ownConn {
			nc.Close()
		}
	}

	counts := newCounters(tel.Meter)
	if err := natsconn.ObserveConnected(tel.Meter, "wsgate.dispatcher.nats.connected", nc); err != nil {
		closeConn()
		return fmt.Errorf("dispatcher: nats gauge: %w", err)
	}
	reliable := newReliableCounters(tel.Meter)
	dopts := []dispatcher.Option{
		dispatcher.WithQueue(cfg.Queue),
		dispatcher.WithConcurrency(cfg.Concurrency),
		dispatcher.WithPrefix(cfg.Prefix),
		dispatcher.WithLogger(log),
		dispatcher.WithHooks(reliable.hooks(counts.hooks(), counts.label)),
		dispatcher.WithTracer(o.tracer),
	}
	if cfg.InboundOn() {
		dopts = append(dopts, dispatcher.WithReliable(cfg.Reliable()))
	}
	if cfg.HistoryOn() {
		dopts = append(dopts, dispatcher.WithHistory())
	}
	d, err := dispatcher.New(nc, dopts...)
	if err != nil {
		closeConn()
		return err
	}
	var fwd *routes.Forwarder
	if table != nil {
		fwd, err = routes.NewForwarder(table, routes.Options{Secret: []byte(cfg.RoutesSecret), Logger: log, Meter: tel.Meter})
		if err == nil {
			err = fwd.Register(d)
		}
		if err != nil {
			closeConn()
			return fmt.Errorf("DISPATCHER_ROUTES_FILE: %w", err)
		}
		defer fwd.Close()
		for _, r := range table.Routes() {
			log.Info("dispatcher route", "route", r.Name(), "url", r.URL, "timeout", r.Timeout,
				"retries", r.Retries, "idempotent", r.Idempotent)
		}
	}
	// A route covering a built-in action replaces it: the application's
	// backend answers "hello" or "chat/..." instead of the demo.
	replaced, err := handlers.RegisterExcept(d, table.Covers)
	if err != nil {
		closeConn()
		return err
	}
	if len(replaced) > 0 {
		log.Info("built-in handlers replaced by routes", "actions", replaced)
	}
	for _, register := range o.register {
		if err := register(d); err != nil {
			closeConn()
			return fmt.Errorf("register handlers: %w", err)
		}
	}
	counts.prepare(tel.Meter, d)
	if cfg.InboundOn() {
		reliable.observePending(tel.Meter, d, log, counts.label)
	}

	pres, err := startPresence(ctx, nc, cfg, log, tel.Meter)
	if err != nil {
		closeConn()
		return err
	}
	defer pres.Close()

	var subscribed atomic.Bool
	probe := health.New(func() error {
		switch {
		case !nc.IsConnected():
			return errNotConnected
		case !subscribed.Load():
			return errNotSubscribed
		}
		return nil
	})
	if err := probe.Observe(tel.Meter, "wsgate.dispatcher.ready"); err != nil {
		closeConn()
		return fmt.Errorf("dispatcher: ready gauge: %w", err)
	}
	mux := http.NewServeMux()
	probe.Register(mux)
	mux.Handle("GET /metrics", tel.MetricsHandler())
	// Without keys the send API is not mounted (404), and the route table,
	// which names no secret, is open like /metrics; with keys it needs one.
	routesTable := table.Handler()
	if keys := cfg.APIKeyList(); len(keys) > 0 {
		api, err := sendapi.New(sendapi.Config{
			Keys: keys, MaxBody: cfg.APIMaxBody, Sender: d.Sender(),
			Connected: nc.IsConnected, Logger: log, Meter: tel.Meter,
		})
		if err != nil {
			closeConn()
			return err
		}
		api.Register(mux)
		routesTable = api.Authorize(routesTable)
	}
	mux.Handle(routes.PathRoutes, routesTable)

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		closeConn()
		return fmt.Errorf("DISPATCHER_ADDR %q: %w", cfg.Addr, err)
	}
	log.Info("dispatcher listening", "addr", ln.Addr().String())
	if o.onListen != nil {
		o.onListen(ln.Addr())
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	if err := start(ctx, d, log); err == nil {
		subscribed.Store(true)
		log.Info("dispatcher subscribed", "actions", d.Actions(), "queue", cfg.Queue)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
	}

	// HTTP stops last so that /readyz answers 503 (rather than refusing
	// connections) and /metrics stays scrapable for the whole drain.
	probe.SetDraining()
	log.Info("dispatcher draining", "in_flight", d.InFlight())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DrainTimeout)
	defer cancel()
	var errs []error
	if err := d.Drain(dctx); err != nil {
		errs = append(errs, err)
	}
	pres.Close()
	if ownConn {
		if err := natsconn.Drain(dctx, nc); err != nil {
			errs = append(errs, err)
		}
	}
	if err := srv.Shutdown(dctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := errors.Join(append([]error{runErr}, errs...)...); err != nil {
		return err
	}
	log.Info("dispatcher stopped")
	return nil
}

// start subscribes d, retrying while NATS is unreachable, until ctx is done.
func start(ctx context.Context, d *dispatcher.Dispatcher, log *slog.Logger) error {
	for {
		err := d.Start(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err() // shutting down before NATS ever answered
		}
		log.Warn("dispatcher not subscribed; retrying", "err", err, "retry_in", startRetry)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(startRetry):
		}
	}
}
