// Command wsgate-dev runs all of wsgate in one process for development: an
// embedded NATS server, one edge with the demo page, and one dispatcher. It
// prints the demo URL, a ready-to-use token and a NATS CLI example.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/services/devstack"
	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/internal/logging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wsgate-dev:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("wsgate-dev", flag.ContinueOnError)
	natsPort := fs.Int("nats-port", 4222, "port of the embedded NATS server on 127.0.0.1 (-1: any free port)")
	edgeAddr := fs.String("edge", "127.0.0.1:8080", "listen address of the edge (demo page, /ws, /client.js)")
	dispatcherAddr := fs.String("dispatcher", "127.0.0.1:8081", "listen address of the dispatcher's probes, metrics and HTTP send API")
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintln(out, "Usage of wsgate-dev (make run): NATS, an edge and a dispatcher in one process.")
		fs.PrintDefaults()
		fmt.Fprintln(out, "\nSettings it turns on (environment variables; one already set wins):")
		for _, s := range devstack.Defaults(devstack.Listen{Edge: *edgeAddr, Dispatcher: *dispatcherAddr}) {
			fmt.Fprintf(out, "  %-26s %s\n", s.Name, s.Why)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the usage is the answer
		}
		return err
	}
	// The dev stack's own defaults (devstack.Defaults); any variable
	// already set wins.
	defaults := devstack.Defaults(devstack.Listen{Edge: *edgeAddr, Dispatcher: *dispatcherAddr})
	if err := devstack.Apply(defaults, os.LookupEnv, os.Setenv); err != nil {
		return err
	}
	edgeCfg, err := edge.LoadConfig()
	if err != nil {
		return err
	}
	dispCfg, err := service.LoadConfig()
	if err != nil {
		return err
	}
	log, err := logging.New(edgeCfg.Settings, os.Stderr)
	if err != nil {
		return err
	}
	cfg := devstack.Config{NATSHost: "127.0.0.1", NATSPort: *natsPort, Edge: edgeCfg, Dispatcher: dispCfg}
	return devstack.Run(ctx, cfg, log, func(s *devstack.Stack) {
		tok, err := s.Token("42", 24*time.Hour)
		if err != nil {
			fmt.Fprintln(stdout, "token:", err)
			return
		}
		banner(stdout, s, edgeCfg, tok)
	})
}

// sendExample is the body of the banner's curl line: the README's first
// HTTP send API example.
const sendExample = `{"target":"user","id":"42","action":"hello","details":"hi"}`

// banner prints what is running and a command to try each feature with.
func banner(w io.Writer, s *devstack.Stack, edgeCfg edge.Config, tok string) {
	fmt.Fprintf(w, `
wsgate dev stack is up (Ctrl-C stops it)

  demo page     %s/
  WebSocket     %s
  client        %s/client.js
  NATS          %s
  dispatcher    %s/metrics
  dev secret    %s   (EDGE_JWT_SECRET, HS256)
  token (user 42, 24 h):
    %s
`, s.EdgeURL, s.WSURL, s.EdgeURL, s.NATSURL, s.DispatcherURL, edgeCfg.JWTSecret, tok)
	if s.APIKey != "" {
		fmt.Fprintf(w, `  send API      %s/v1/send, /v1/close   (DISPATCHER_API_KEYS, a new dev key each start)
  API key       %s
`, s.DispatcherURL, s.APIKey)
	}
	if s.DevRoute != "" {
		fmt.Fprintf(w, `  HTTP route    %s -> %s/dev/route-backend   (DISPATCHER_ROUTES_SECRET signs it)
`, s.DevRoute, s.EdgeURL)
	}
	if edgeCfg.PresenceOn() {
		fmt.Fprintf(w, `  presence      WS_PRESENCE=%s: the demo page lists who is online; open it in two tabs as two users
`, edgeCfg.Presence)
	}
	origins := "none: only pages served by the edge itself (EDGE_ALLOWED_ORIGINS is empty)"
	if len(edgeCfg.AllowedOrigins) > 0 {
		origins = strings.Join(edgeCfg.AllowedOrigins, ",") + "   (EDGE_ALLOWED_ORIGINS)"
	}
	fmt.Fprintf(w, `  other origins %s

A page served from another origin (your application's own site, e.g.
http://localhost:3000) gets HTTP 403 on /ws until that origin is allowed:
  EDGE_ALLOWED_ORIGINS=http://localhost:3000 make run      (comma-separated; * allows any)

Try it:
  websocat '%s?token=%s'     then send ["hello","Hello, world!"]
`, origins, s.WSURL, tok)
	if s.DevRoute != "" {
		fmt.Fprintf(w, `  (and send ["%s","hi"]: the dispatcher POSTs it to the dev backend, whose answer comes back)
`, s.DevRoute)
	}
	if s.APIKey != "" {
		fmt.Fprintf(w, `  curl -X POST %s/v1/send -H 'Authorization: Bearer %s' -d '%s'
  export DISPATCHER=%s KEY=%s     # for the README's HTTP API examples (send, close, routes)
`, s.DispatcherURL, s.APIKey, sendExample, s.DispatcherURL, s.APIKey)
	}
	if edgeCfg.PresenceOn() {
		fmt.Fprintf(w, `  nats --server %s req ws.presence.group.demo ''     # who is online (every demo token has group "demo")
`, s.NATSURL)
	}
	fmt.Fprintf(w, `  nats --server %s pub ws.send.user.42 '{"action":"hello","details":"Hello from the CLI"}'
  nats --server %s sub 'ws.in.>'
  nats --server %s req ws.presence.user.42 ''             # who is online (WS_PRESENCE)
  nats --server %s req ws.ctl.join.user.42 '{"groups":["room-5"]}'   # put user 42 into a room
  nats --server %s stream info WS_HISTORY                  # what a reconnecting client can recover (WS_HISTORY)
  nats --server %s sub 'ws.dead.>'                          # reliable actions that failed every retry (WS_INBOUND)
`, s.NATSURL, s.NATSURL, s.NATSURL, s.NATSURL, s.NATSURL, s.NATSURL)
}
