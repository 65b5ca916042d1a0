// Command natsd is a NATS server for load runs: the nats-server Go module
// with default options on a loopback port, in its own process so that its
// CPU and memory are measured apart from the load tool's. It prints
// "ready nats://host:port" once it accepts clients and stops on SIGINT or
// SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("natsd", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1", "listen host")
	port := fs.Int("port", -1, "listen port (-1: a free one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: *addr, Port: *port, NoSigs: true, NoLog: true})
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("not ready within 10s")
	}
	fmt.Fprintln(stdout, "ready", ns.ClientURL())
	<-ctx.Done()
	ns.Shutdown()
	ns.WaitForShutdown()
	return nil
}
