// Command dispatcher runs the wsgate dispatcher service (DESIGN.md §5): the
// built-in handlers behind a NATS queue group, with /healthz, /readyz and
// /metrics on DISPATCHER_ADDR. It is configured by environment variables
// (DESIGN.md §6) and stops gracefully on SIGINT or SIGTERM.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgate/wsgate/services/dispatcher/service"
	"github.com/wsgate/wsgate/services/internal/logging"
	"github.com/wsgate/wsgate/services/internal/memlimit"
	"github.com/wsgate/wsgate/services/internal/sysmonpace"
)

func main() {
	// Before anything else: it may start the program again, with
	// GODEBUG=schedtrace=2147483647 unless GODEBUG sets schedtrace.
	if err := sysmonpace.Apply(); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

// run reads the configuration from the environment and runs the service
// until ctx is cancelled, logging to stdout. Its error is the one the
// process exits with; nothing else reports it.
func run(ctx context.Context, stdout io.Writer) error {
	cfg, err := service.LoadConfig()
	if err != nil {
		return err
	}
	log, err := logging.New(cfg.Settings, stdout)
	if err != nil {
		return err
	}
	memlimit.Apply(log)
	return service.Run(ctx, cfg, log)
}
