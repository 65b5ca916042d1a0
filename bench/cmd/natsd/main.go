// Command natsd is a NATS server for load runs: the nats-server Go module
// with default options on a loopback port, in its own process so that its
// CPU and memory are measured apart from the load tool's. It prints
// "ready nats://host:port" once it accepts clients and stops on SIGINT or
// SIGTERM.
//
// With -cluster it is a node of a NATS cluster: it listens for routes on a
// free loopback port and prints "cluster nats-route://host:port" at once,
// joins the nodes of -routes, and prints its ready line only once it has
// routes to -peers other nodes.
//
// With -jetstream DIR, JetStream is on with its store in DIR (a cluster's
// nodes need a -name each).
//
// SIGUSR1 runs a garbage collection and returns the freed memory to the
// system, then prints "freed", so that a memory figure can read the live
// heap from RSS (bench/cmd/inboundmem).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
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
	cluster := fs.Bool("cluster", false, "be a node of a cluster (routes on a free loopback port)")
	name := fs.String("name", "", "-cluster: this node's server name")
	routes := fs.String("routes", "", "-cluster: comma-separated route URLs of other nodes to join")
	peers := fs.Int("peers", 0, "-cluster: other nodes to be routed to before the ready line")
	jetStream := fs.String("jetstream", "", "turn JetStream on, with its store in this folder (empty: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := &natsserver.Options{Host: *addr, Port: *port, NoSigs: true, NoLog: true}
	if *jetStream != "" {
		opts.JetStream = true
		opts.StoreDir = *jetStream
	}
	if *cluster {
		opts.ServerName = *name
		opts.Cluster = natsserver.ClusterOpts{Name: "bench", Host: *addr, Port: -1}
		if *routes != "" {
			opts.Routes = natsserver.RoutesFromStr(*routes)
		}
	}
	ns, err := natsserver.NewServer(opts)
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return errors.New("not ready within 10s")
	}
	if *cluster {
		fmt.Fprintln(stdout, "cluster", "nats-route://"+ns.ClusterAddr().String())
		if err := waitRoutes(ctx, ns, *peers); err != nil {
			ns.Shutdown()
			return err
		}
	}
	fmt.Fprintln(stdout, "ready", ns.ClientURL())
	gc := make(chan os.Signal, 1)
	signal.Notify(gc, syscall.SIGUSR1)
	defer signal.Stop(gc)
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-gc:
			debug.FreeOSMemory() // a full collection, then the freed pages go back
			fmt.Fprintln(stdout, "freed")
		}
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	return nil
}

// waitRoutes polls until ns has routes to peers other nodes.
func waitRoutes(ctx context.Context, ns *natsserver.Server, peers int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for routedPeers(ns) < peers {
		select {
		case <-ctx.Done():
			return fmt.Errorf("routes to %d of %d peers within 30s", routedPeers(ns), peers)
		case <-t.C:
		}
	}
	return nil
}

// routedPeers is the number of other nodes ns has a route to (a node may
// hold a pool of several route connections to each).
func routedPeers(ns *natsserver.Server) int {
	rz, err := ns.Routez(&natsserver.RoutezOptions{})
	if err != nil {
		return 0
	}
	ids := map[string]bool{}
	for _, r := range rz.Routes {
		ids[r.RemoteID] = true
	}
	return len(ids)
}
