// Command edge runs the wsgate edge service; its configuration comes from
// the environment (see .env.example).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgate/wsgate/services/edge"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/memlimit"
	"github.com/wsgate/wsgate/services/internal/sysmonpace"
)

func main() {
	// Before anything else: it may start the program again, with
	// GODEBUG=schedtrace=2147483647 unless GODEBUG sets schedtrace.
	if err := sysmonpace.Apply(); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, stdout io.Writer) error {
	cfg, err := edge.LoadConfig()
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.Settings, stdout)
	if err != nil {
		return err
	}
	memlimit.Apply(log)
	log.Info("edge starting", logging.Attrs(cfg)...)
	srv, err := edge.New(cfg, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
