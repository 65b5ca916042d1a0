// Package devstack runs all of wsgate in one process for development: an
// embedded NATS server, one edge serving the demo page, and one dispatcher
// with the built-in handlers. It mints tokens for the demo with the edge's
// HMAC secret.
package devstack

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/edge"
)

//go:embed demo
var demo embed.FS

// TokenTTL is the lifetime of the tokens the dev stack mints.
const TokenTTL = 15 * time.Minute

// Config is the whole stack's configuration.
type Config struct {
	NATSHost   string // embedded NATS server host (127.0.0.1)
	NATSPort   int    // its port; -1 picks a free one
	Edge       edge.Config
	Dispatcher service.Config
}

// Stack describes a running stack.
type Stack struct {
	NATSURL       string
	EdgeURL       string // http://host:port of the edge (demo page at /)
	WSURL         string
	DispatcherURL string
	// APIKey is a key of the dispatcher's HTTP send API; empty when the
	// API is off (DISPATCHER_API_KEYS empty).
	APIKey string
	// DevRoute is the action routed over HTTP to the dev stack's own
	// backend (DevRouteAction); empty when DISPATCHER_ROUTES_FILE names the
	// application's routes or DISPATCHER_ROUTES_SECRET is empty.
	DevRoute string
	secret   []byte
}

// Token mints a token for user, valid for ttl.
func (s *Stack) Token(user string, ttl time.Duration) (string, error) {
	return mint(s.secret, user, ttl)
}

func mint(secret []byte, user string, ttl time.Duration) (string, error) {
	if err := wire.ValidateID(user); err != nil {
		return "", err
	}
	now := time.Now()
	claims := jwt.MapClaims{
		"sub": user, "sid": user + "-" + strconv.FormatInt(now.UnixNano(), 36),
		"groups": []string{"demo"}, "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// Run starts the stack, calls ready once every part is serving, and runs
// until ctx is done; then it stops the edge, the dispatcher and NATS, in that
// order.
func Run(ctx context.Context, cfg Config, log *slog.Logger, ready func(*Stack)) error {
	if cfg.Edge.JWTSecret == "" {
		return errors.New("EDGE_JWT_SECRET: the dev stack needs an HMAC secret to mint tokens")
	}
	// JetStream is on for what needs it (WS_PRESENCE); its store lives as
	// long as the stack.
	store, err := os.MkdirTemp("", "wsgate-dev-jetstream-")
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	defer os.RemoveAll(store)
	ns, err := natsserver.NewServer(&natsserver.Options{Host: cfg.NATSHost, Port: cfg.NATSPort, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: store})
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats server did not start on %s:%d", cfg.NATSHost, cfg.NATSPort)
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.Name("wsgate-dev"))
	if err != nil {
		return fmt.Errorf("nats connect: %w", err)
	}
	defer nc.Close()

	stack := &Stack{NATSURL: ns.ClientURL(), secret: []byte(cfg.Edge.JWTSecret)}
	if keys := cfg.Dispatcher.APIKeyList(); len(keys) > 0 {
		stack.APIKey = keys[0]
	}
	site, _ := fs.Sub(demo, "demo")
	edgeOpts := []edge.Option{
		edge.WithNATS(nc),
		edge.WithHandler("POST /dev/token", tokenHandler(stack.secret, cfg.Edge.Path)),
		edge.WithHandler("/", http.FileServerFS(site)),
	}
	var routesDir string // where the dev route's file goes; "" without the dev route
	if cfg.Dispatcher.RoutesFile == "" && cfg.Dispatcher.RoutesSecret != "" {
		if routesDir, err = os.MkdirTemp("", "wsgate-dev-routes-"); err != nil {
			return fmt.Errorf("dev routes: %w", err)
		}
		defer os.RemoveAll(routesDir)
		stack.DevRoute = DevRouteAction
		edgeOpts = append(edgeOpts, edge.WithHandler("POST "+devRoutePath, devRouteBackend([]byte(cfg.Dispatcher.RoutesSecret))))
	}
	edgeSrv, err := edge.New(cfg.Edge, log.With("service", "edge"), edgeOpts...)
	if err != nil {
		return err
	}
	if err := edgeSrv.Listen(); err != nil {
		return err
	}
	stack.EdgeURL = "http://" + edgeSrv.Addr().String()
	stack.WSURL = "ws://" + edgeSrv.Addr().String() + cfg.Edge.Path

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	dispatcherUp := make(chan net.Addr, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		dcfg := cfg.Dispatcher
		if routesDir != "" {
			// The route's URL is the edge's, known only now.
			path, err := writeDevRoutes(routesDir, stack.EdgeURL)
			if err != nil {
				errs <- err
				return
			}
			dcfg.RoutesFile = path
		}
		errs <- service.Run(ctx, dcfg, log.With("service", "dispatcher"),
			service.WithConn(nc), service.OnListen(func(a net.Addr) { dispatcherUp <- a }))
	}()
	go func() { defer wg.Done(); errs <- edgeSrv.Serve(ctx) }()

	select {
	case a := <-dispatcherUp:
		stack.DispatcherURL = "http://" + a.String()
		// The dispatcher listens before it is subscribed (with reliable
		// inbound it waits for the edge's stream): "up" is its /readyz.
		waitReady(ctx, stack.DispatcherURL+"/readyz", log)
		if ready != nil {
			ready(stack)
		}
	case err := <-errs:
		cancel()
		wg.Wait()
		return err
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// tokenHandler answers POST /dev/token {"user": "..."} with a fresh token
// and the WebSocket URL, for the demo page's sign-in.
func tokenHandler(secret []byte, wsPath string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			User string `json:"user"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&req); err != nil {
			http.Error(w, `body must be {"user": "<name>"}`, http.StatusBadRequest)
			return
		}
		tok, err := mint(secret, req.User, TokenTTL)
		if err != nil {
			http.Error(w, "user: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token": tok, "ws_url": "ws://" + r.Host + wsPath,
			"expires": time.Now().Add(TokenTTL).Unix(),
		})
	})
}

// readyWait bounds how long the stack waits for the dispatcher's readiness
// before it says it is up anyway (the logs then tell what it waits for).
const readyWait = 15 * time.Second

// waitReady polls url until it answers 200, ctx ends or readyWait passes.
func waitReady(ctx context.Context, url string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			log.Warn("dispatcher not ready yet", "url", url)
			return
		case <-tick.C:
		}
	}
}
