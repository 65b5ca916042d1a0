// Command wsgate-dev runs all of wsgate in one process for development: an
// embedded NATS server, one edge with the demo page, and one dispatcher. It
// prints the demo URL, a ready-to-use token and a NATS CLI example.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
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
	dispatcherAddr := fs.String("dispatcher", "127.0.0.1:8081", "listen address of the dispatcher's probes and metrics")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The dev stack's own defaults; any variable already set wins.
	defaults := map[string]string{
		"EDGE_ADDR": *edgeAddr, "DISPATCHER_ADDR": *dispatcherAddr,
		"EDGE_ID": "dev", "LOG_FORMAT": "text", "EDGE_JWT_SECRET": randomSecret(),
	}
	for k, v := range defaults {
		if _, set := os.LookupEnv(k); !set {
			if err := os.Setenv(k, v); err != nil {
				return err
			}
		}
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
		fmt.Fprintf(stdout, `
wsgate dev stack is up (Ctrl-C stops it)

  demo page     %s/
  WebSocket     %s
  client        %s/client.js
  NATS          %s
  dispatcher    %s/metrics
  dev secret    %s   (EDGE_JWT_SECRET, HS256)
  token (user 42, 24 h):
    %s

Try it:
  websocat '%s?token=%s'     then send ["hello","Hello, world!"]
  nats --server %s pub ws.send.user.42 '{"action":"hello","details":"Hello from the CLI"}'
  nats --server %s sub 'ws.in.>'
`, s.EdgeURL, s.WSURL, s.EdgeURL, s.NATSURL, s.DispatcherURL, edgeCfg.JWTSecret, tok,
			s.WSURL, tok, s.NATSURL, s.NATSURL)
	})
}

func randomSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
