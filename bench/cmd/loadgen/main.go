// Command loadgen puts WebSocket load on wsgate or Centrifugo and reports
// connection cost, delivery rate, latency percentiles and loss.
//
//	loadgen -start wsgate -scenario broadcast -conns 2000 -rate 5 -messages 50
//	loadgen -start centrifugo -scenario roundtrip -conns 1000 -rate 1000 -duration 20s
//	loadgen -scenario idle -url ws://127.0.0.1:8080/ws -secret S -pid 1234 -conns 15000 -workers 2
//
// It re-executes itself as worker processes ("loadgen worker", at most
// 15,000 connections each, driven over stdin/stdout) and, for Centrifugo's
// RPC proxy, as the echo backend ("loadgen rpcecho"). Live counters go to
// stderr once a second; a summary line goes to stdout, the full record to
// -json. See docs/PERFORMANCE.md.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/bench/internal/load"
	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	raiseOpenFiles()
	if len(args) > 0 {
		switch args[0] {
		case "worker":
			return load.ServeWorker(ctx, stdin, stdout)
		case "rpcecho":
			return rpcecho(ctx, args[1:], stdout)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	exeDir := filepath.Dir(exe)

	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg load.Config
	var urls, pids list
	fs.StringVar(&cfg.Scenario, "scenario", "idle", "idle, broadcast, unicast, roundtrip or hello")
	fs.StringVar(&cfg.Gateway, "gateway", "wsgate", "wsgate or centrifugo (implied by -start)")
	start := fs.String("start", "", "start the servers of this gateway for the run: wsgate or centrifugo")
	fs.IntVar(&cfg.Conns, "conns", 1000, "connections (hello: two per user, on two edges)")
	fs.IntVar(&cfg.Workers, "workers", -1, "worker processes (0: clients in this process; -1: one per 7,500 connections)")
	fs.IntVar(&cfg.LocalIPs, "local-ips", 8, "spread source addresses over 127.0.0.2 … 127.0.0.(1+n); 0: kernel's choice")
	fs.Float64Var(&cfg.Ramp, "ramp", 1000, "connections opened per second")
	fs.IntVar(&cfg.Inflight, "inflight", 64, "handshakes in flight per worker")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "idle hold; sending time of unicast, roundtrip and hello (and broadcast without -messages)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "messages (broadcast, unicast) or requests (roundtrip, hello) per second, in all")
	fs.IntVar(&cfg.Messages, "messages", 0, "broadcast: messages to publish (0: rate × duration)")
	fs.IntVar(&cfg.Size, "size", 128, "payload bytes")
	fs.DurationVar(&cfg.Drain, "drain", 15*time.Second, "longest wait for the last messages")
	fs.IntVar(&cfg.Edges, "edges", 1, "-start wsgate: edges to start (hello uses 2); users are spread round robin over the edges (or over the -url list)")
	fs.IntVar(&cfg.Tabs, "tabs", 1, "idle: connections per user (users = conns/tabs), as a browser's tabs each with its own connection")
	fs.StringVar(&cfg.Client, "client", load.ClientEpoll, "how workers read: epoll (a few event loops, the tool's own client) or gorilla (a goroutine per connection with gorilla/websocket, the common Go client)")
	fs.BoolVar(&cfg.Reliable, "reliable", false, "wsgate roundtrip: send each echo as a reliable action (message id, DESIGN.md §8) and count its Server/ack; -start turns on JetStream and WS_INBOUND for the edges and the dispatcher")
	fs.StringVar(&cfg.Inbound, "inbound", "memory", "-reliable -start: WS_INBOUND storage of the inbound stream (memory or file)")
	fs.StringVar(&cfg.Publish.Mode, "publish", proto.PublishBatch, "centrifugo: how the publisher uses its HTTP server API: batch (messages due in the same millisecond in one /api/batch), parallel (the same with \"parallel\": true) or single (one /api/publish per message)")
	fs.IntVar(&cfg.Publish.Inflight, "publish-inflight", proto.DefaultInflight, "centrifugo: HTTP API requests in flight at most (over as many kept-alive connections)")
	fs.Var(&urls, "url", "WebSocket URL of the gateway (repeatable: hello's second edge); not with -start")
	fs.StringVar(&cfg.NATSURL, "nats", "", "wsgate: NATS URL the publisher uses; not with -start")
	fs.StringVar(&cfg.APIURL, "api", "", "centrifugo: base URL of its HTTP API (http://host:port); not with -start")
	fs.StringVar(&cfg.APIKey, "api-key", "", "centrifugo: HTTP API key (random with -start)")
	fs.StringVar(&cfg.Secret, "secret", "", "HMAC secret of the tokens (random with -start)")
	fs.StringVar(&cfg.Prefix, "prefix", "ws", "wsgate: WS_SUBJECT_PREFIX")
	fs.Var(&pids, "pid", "server process to measure (repeatable)")
	binDir := fs.String("bin", filepath.Join(exeDir, "..", "..", "bin"), "-start wsgate: directory of edge and dispatcher")
	natsd := fs.String("natsd", filepath.Join(exeDir, "natsd"), "-start wsgate: the natsd program")
	centrifugo := fs.String("centrifugo", filepath.Join(exeDir, "centrifugo"), "-start centrifugo: the centrifugo binary")
	sendQueue := fs.Int("send-queue", 4096, "-start wsgate: EDGE_SEND_QUEUE")
	history := fs.String("history", load.HistoryOff, "-start wsgate: off, memory or file: natsd with JetStream and every edge with WS_HISTORY set to it (the publisher keeps publishing with core NATS to ws.send.*, which the history stream stores)")
	natsNodes := fs.Int("nats-nodes", 1, "-start wsgate: NATS servers; more than 1 is a cluster of natsd processes, the edges spread over its nodes and the publisher on the first")
	fs.BoolVar(&cfg.Compress, "compress", false, "-client gorilla: the clients offer permessage-deflate; -start wsgate turns EDGE_COMPRESSION on")
	payload := fs.String("payload", "pad", "pad (the standard object, padded with one letter) or text (application-like JSON: a feed of items with words, names and numbers, which compresses as real messages do)")
	fs.BoolVar(&cfg.Presence, "presence", false, "-start wsgate: presence on (WS_PRESENCE=memory, JetStream) with the dispatcher, which keeps its index (DESIGN §9)")
	workDir := fs.String("workdir", load.DefaultWorkDir(), "-start: servers' configuration and logs")
	jsonOut := fs.String("json", "", "write the JSON record to this file (- for stdout)")
	fs.StringVar(&cfg.Label, "label", "", "free text stored in the record")
	timeout := fs.Duration("timeout", 10*time.Minute, "hard limit of the whole run")
	godebug := fs.String("godebug", sysmonPace, "GODEBUG setting added to every process the run starts (servers of either gateway, workers); empty: none")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *godebug != "" {
		// Inherited by every child: the stack's servers and the workers.
		if err := os.Setenv("GODEBUG", addSetting(os.Getenv("GODEBUG"), *godebug)); err != nil {
			return err
		}
	}
	switch *payload {
	case "pad":
	case "text":
		cfg.Text = true
	default:
		return fmt.Errorf("-payload %q: pad or text", *payload)
	}
	cfg.URLs = urls
	for _, p := range pids {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fmt.Errorf("-pid %q: %w", p, err)
		}
		cfg.Pids = append(cfg.Pids, n)
	}
	if cfg.Workers < 0 {
		cfg.Workers = max(1, (cfg.Conns+7499)/7500)
	}
	cfg.Exe = exe
	cfg.Progress = stderr
	cfg.Command = commandLine(args)
	if *start != "" {
		if len(urls) > 0 {
			return errors.New("-url and -start exclude each other")
		}
		cfg.Gateway = *start
		if err := load.CheckHistory(cfg.Gateway, *history); err != nil {
			return err
		}
		cfg.History = *history
		if cfg.Presence && cfg.Gateway != "wsgate" {
			return errors.New("-presence is wsgate's")
		}
		if cfg.Secret == "" {
			cfg.Secret = randomHex()
		}
		if cfg.APIKey == "" {
			cfg.APIKey = randomHex()
		}
		cfg.Start = &stack.Config{
			Edges: cfg.Edges, BinDir: *binDir, NATSD: *natsd, Centrifugo: *centrifugo,
			Self: exe, SendQueue: *sendQueue, NATSNodes: *natsNodes,
			Dir: filepath.Join(*workDir, cfg.Gateway+"-"+strconv.Itoa(os.Getpid())),
		}
		if cfg.Compress {
			cfg.Start.EdgeEnv = append(cfg.Start.EdgeEnv, "EDGE_COMPRESSION=on")
		}
		if cfg.History != load.HistoryOff {
			cfg.Start.JetStream = true
			cfg.Start.EdgeEnv = append(cfg.Start.EdgeEnv, "WS_HISTORY="+cfg.History)
		}
	} else if *history != load.HistoryOff {
		return errors.New("-history needs -start wsgate (without -start, set WS_HISTORY on the edges you run)")
	} else if cfg.Secret == "" {
		return errors.New("-secret is required without -start")
	} else if cfg.Presence {
		return errors.New("-presence needs -start wsgate")
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := load.Run(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.Summary())
	if *jsonOut != "" {
		data, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			return err
		}
		data = append(data, '\n')
		if *jsonOut == "-" {
			_, err = stdout.Write(data)
		} else {
			err = os.WriteFile(*jsonOut, data, 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// rpcecho serves proto.RPCEcho on -addr and prints "ready <url>".
func rpcecho(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("rpcecho", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: proto.RPCEcho(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "ready http://%s/rpc\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// raiseOpenFiles lifts the soft limit of open files to the hard one, for
// this process and the servers and workers it starts.
func raiseOpenFiles() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

func randomHex() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// commandLine is the command that reproduces the run, from the repository root.
func commandLine(args []string) string {
	parts := []string{"bench/.bin/loadgen"}
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$") {
			a = strconv.Quote(a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// sysmonPace keeps the Go runtime's monitor thread (sysmon) at its slow pace
// in every process of a run, as wsgate's images do (services/*/Dockerfile).
// A process that goes idle between bursts (every server here, at thousands
// of messages a second) otherwise has sysmon sleep until the next system
// call, then poll every 20 µs again: on the 2-core VM of docs/PERFORMANCE.md
// that took 10-20 % of each process's CPU, and the tail latency rose with
// it. With schedtrace set sysmon never sleeps that deeply, so it backs off
// to one check per 10 ms; a period of 24.8 days means no trace is printed
// (except one line at start on a host up longer than that).
const sysmonPace = "schedtrace=2147483647"

// addSetting adds setting (key=value) to a GODEBUG list unless the list
// already sets its key.
func addSetting(list, setting string) string {
	key, _, _ := strings.Cut(setting, "=")
	for _, s := range strings.Split(list, ",") {
		if k, _, _ := strings.Cut(s, "="); k == key {
			return list
		}
	}
	if list == "" {
		return setting
	}
	return list + "," + setting
}
