// Command inboundrun is the long run of reliable inbound (DESIGN.md §8):
// clients send numbered reliable actions over two edges to a handler built
// on the dispatcher SDK (services/devstack/cmd/counthandler), while the
// dispatcher and the edges are killed with SIGKILL and restarted in turn.
// Like the JS client's outbox, each client keeps an action until its
// Server/ack and sends it again, with the same id, after a reconnect (to
// the other edge) or when no answer came. The handler records every
// delivery; at the end the tool counts, per action number, how often its
// effect happened and how often the stream stored it as new, and exits
// non-zero on any loss, double handling or dead letter.
//
//	inboundrun -actions 1000000 -clients 200 -rate 5000 -kill-every 15s -json out.json   (≈4 min)
//
// Run it from the repository root after make build and
// go build -o bin/counthandler ./services/devstack/cmd/counthandler.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/bench/internal/proto"
	"github.com/wsgate/wsgate/bench/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "inboundrun:", err)
		os.Exit(1)
	}
}

// Report is the record of a run.
type Report struct {
	Command   string  `json:"command"`
	Started   string  `json:"started"`
	Actions   int     `json:"actions"`
	Clients   int     `json:"clients"`
	Edges     int     `json:"edges"`
	Rate      float64 `json:"rate_per_s"`
	KillEvery string  `json:"kill_every"`
	AckWait   string  `json:"ack_wait"`
	Storage   string  `json:"storage"`
	// Seconds is the whole run; SendSeconds until the last ack.
	Seconds     float64 `json:"seconds"`
	SendSeconds float64 `json:"send_seconds"`
	// Kills are the SIGKILLs per server, in the order they came.
	Kills      map[string]int `json:"kills"`
	KillsTotal int            `json:"kills_total"`
	KillLog    []string       `json:"kill_log"`
	// The clients' side.
	Sent          uint64 `json:"sent"`           // first sends
	Resent        uint64 `json:"resent"`         // sends again with the same id
	Acked         uint64 `json:"acked"`          // actions acknowledged
	DuplicateAcks uint64 `json:"duplicate_acks"` // of which the stream already had
	AckErrors     uint64 `json:"ack_errors"`     // Server/ack:error answers
	Reconnects    uint64 `json:"reconnects"`
	DialFailures  uint64 `json:"dial_failures"`
	// The handler's side.
	Tally       Tally  `json:"tally"`
	DeadLetters uint64 `json:"dead_letters"`
	OK          bool   `json:"ok"`
}

type options struct {
	actions, clients, edges, maxDeliver int
	rate                                float64
	killEvery, down, ackWait, resend    time.Duration
	settle, timeout                     time.Duration
	kill                                string
	storage                             string
	binDir, natsd, handler, workDir     string
	jsonOut                             string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	exeDir := filepath.Dir(exe)
	var o options
	fs := flag.NewFlagSet("inboundrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.actions, "actions", 1000000, "reliable actions to send, numbered 0 … actions-1")
	fs.IntVar(&o.clients, "clients", 200, "clients (one connection and user each), spread over the edges")
	fs.IntVar(&o.edges, "edges", 2, "edges")
	fs.Float64Var(&o.rate, "rate", 5000, "actions per second, in all")
	fs.DurationVar(&o.killEvery, "kill-every", 15*time.Second, "pause between two kills")
	fs.DurationVar(&o.down, "down", time.Second, "how long a killed server stays down before its restart")
	fs.StringVar(&o.kill, "kill", "dispatcher,edge1,dispatcher,edge2", "servers to kill, in turn (repeating)")
	fs.DurationVar(&o.ackWait, "ack-wait", 2*time.Second, "the handler's DISPATCHER_ACK_WAIT: how soon a killed dispatcher's deliveries come again")
	fs.IntVar(&o.maxDeliver, "max-deliver", 5, "the handler's DISPATCHER_MAX_DELIVER")
	fs.DurationVar(&o.resend, "resend-after", 5*time.Second, "a client sends an unanswered action again after this")
	fs.DurationVar(&o.settle, "settle", time.Minute, "longest wait, after the last ack, for the handler to have handled every action")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Minute, "hard limit of the whole run")
	fs.StringVar(&o.storage, "inbound", "file", "WS_INBOUND storage of the inbound stream: memory or file")
	fs.StringVar(&o.binDir, "bin", filepath.Join(exeDir, "..", "..", "bin"), "directory of edge and counthandler")
	fs.StringVar(&o.natsd, "natsd", filepath.Join(exeDir, "natsd"), "the natsd program")
	fs.StringVar(&o.handler, "handler", "", "the handler program (default: counthandler in -bin)")
	fs.StringVar(&o.workDir, "workdir", filepath.Join(os.TempDir(), "wsgate-inboundrun"), "servers' stores, logs and the handler's file")
	fs.StringVar(&o.jsonOut, "json", "", "write the JSON record to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.actions < 1 || o.clients < 1 || o.edges < 1 || o.rate <= 0 {
		return errors.New("-actions, -clients, -edges and -rate must be positive")
	}
	if o.handler == "" {
		o.handler = filepath.Join(o.binDir, "counthandler")
	}
	rep, err := longRun(ctx, o, "bench/.bin/inboundrun "+strings.Join(args, " "), stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, rep.summary())
	if o.jsonOut != "" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	if !rep.OK {
		return fmt.Errorf("lost %d, handled twice %d, stored twice %d, unknown %d, dead letters %d: %v",
			rep.Tally.Lost, rep.Tally.HandledTwice, rep.Tally.StoredTwice, rep.Tally.Unknown, rep.DeadLetters, rep.Tally.Examples)
	}
	return nil
}

func (r *Report) summary() string {
	return fmt.Sprintf("inboundrun actions=%d clients=%d edges=%d rate=%.0f/s: %.0fs, kills %d %v; sent %d resent %d acked %d duplicate-acks %d ack-errors %d reconnects %d; deliveries %d redeliveries %d skipped-by-idempotency %d dead-letters %d; lost %d handled-twice %d stored-twice %d → %s",
		r.Actions, r.Clients, r.Edges, r.Rate, r.Seconds, r.KillsTotal, r.Kills, r.Sent, r.Resent, r.Acked, r.DuplicateAcks, r.AckErrors, r.Reconnects,
		r.Tally.Deliveries, r.Tally.Redeliveries, r.Tally.Skipped, r.DeadLetters, r.Tally.Lost, r.Tally.HandledTwice, r.Tally.StoredTwice, map[bool]string{true: "ok", false: "FAILED"}[r.OK])
}

func longRun(ctx context.Context, o options, command string, log io.Writer) (*Report, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	started := time.Now()
	rep := &Report{Command: command, Started: started.UTC().Format(time.RFC3339), Actions: o.actions, Clients: o.clients,
		Edges: o.edges, Rate: o.rate, KillEvery: o.killEvery.String(), AckWait: o.ackWait.String(), Storage: o.storage, Kills: map[string]int{}}
	dir := filepath.Join(o.workDir, strconv.Itoa(os.Getpid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	handled := filepath.Join(dir, "handled.log")
	secret := "inboundrun"
	st, err := stack.Start(ctx, stack.Config{
		Gateway: "wsgate", Edges: o.edges, Dispatcher: true, BinDir: o.binDir, NATSD: o.natsd,
		Secret: secret, SendQueue: 4096, JetStream: true, Dir: dir,
		EdgeEnv:        []string{"WS_INBOUND=" + o.storage},
		DispatcherPath: o.handler,
		DispatcherArgs: []string{"-file", handled, "-ack-wait", o.ackWait.String(), "-max-deliver", strconv.Itoa(o.maxDeliver)},
	})
	if err != nil {
		return nil, err
	}
	defer st.Stop()

	nc, err := nats.Connect(st.NATSURL)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	var dead atomic.Uint64
	sub, err := nc.Subscribe("ws.dead.>", func(*nats.Msg) { dead.Add(1) })
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return nil, err
	}

	var c counters
	clients := make([]*client, o.clients)
	for i := range clients {
		user := userOf(i, o.clients)
		token, err := proto.Wsgate{}.Token(secret, user, time.Now().Add(tokenLifetime))
		if err != nil {
			return nil, err
		}
		clients[i] = &client{n: i, clients: o.clients, actions: o.actions, user: user, token: token, urls: st.URLs,
			rate: o.rate / float64(o.clients), resendAfter: o.resend, c: &c, edge: i % len(st.URLs)}
	}

	// The killer: one server at a time, while the clients send.
	kctx, stopKills := context.WithCancel(ctx)
	var kills sync.WaitGroup
	var killErr error
	kills.Go(func() { killErr = killLoop(kctx, st, o, rep, log) })

	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for i, cl := range clients {
		wg.Go(func() { errs[i] = cl.run(ctx) })
	}
	progressDone := make(chan struct{})
	var pg sync.WaitGroup
	pg.Go(func() { progress(progressDone, &c, o.actions, &dead, log) })
	wg.Wait()
	rep.SendSeconds = time.Since(started).Seconds()
	stopKills()
	kills.Wait()
	close(progressDone)
	pg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("clients: %w", err)
	}
	if killErr != nil {
		return nil, killErr
	}

	// Every action is acknowledged: wait until the handler has them all.
	deadline := time.Now().Add(o.settle)
	for {
		t, err := readTally(handled, o.actions, o.clients)
		if err != nil {
			return nil, err
		}
		if t.Lost == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	// Stopped (drained) before the last reading: nothing is in flight.
	if err := st.Stop(); err != nil {
		fmt.Fprintln(log, "inboundrun: stopping servers:", err)
	}
	if rep.Tally, err = readTally(handled, o.actions, o.clients); err != nil {
		return nil, err
	}
	rep.Sent, rep.Resent, rep.Acked = c.sent.Load(), c.resent.Load(), c.acked.Load()
	rep.DuplicateAcks, rep.AckErrors = c.dupAcks.Load(), c.nacks.Load()
	rep.Reconnects, rep.DialFailures = c.reconnects.Load(), c.dialFails.Load()
	rep.DeadLetters = dead.Load()
	rep.Seconds = time.Since(started).Seconds()
	rep.OK = rep.Tally.OK() && rep.DeadLetters == 0 && rep.Acked == uint64(o.actions)
	return rep, nil
}

func readTally(path string, actions, clients int) (Tally, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return tally(strings.NewReader(""), actions, clients)
	}
	if err != nil {
		return Tally{}, err
	}
	defer f.Close()
	return tally(f, actions, clients)
}

// killLoop kills the servers of o.kill in turn every o.killEvery, each
// restarted after o.down, until ctx ends; every server it killed is
// running again when it returns.
func killLoop(ctx context.Context, st *stack.Stack, o options, rep *Report, log io.Writer) error {
	targets := strings.Split(o.kill, ",")
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(o.killEvery):
		}
		name := strings.TrimSpace(targets[i%len(targets)])
		if err := st.Kill(name); err != nil {
			return err
		}
		rep.Kills[name]++
		rep.KillsTotal++
		rep.KillLog = append(rep.KillLog, fmt.Sprintf("%.1fs %s", time.Since(start).Seconds(), name))
		fmt.Fprintf(log, "[%4.0fs] SIGKILL %s\n", time.Since(start).Seconds(), name)
		time.Sleep(o.down)
		// Restarted even when ctx ended meanwhile, so that the run ends with
		// every server up.
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := st.Restart(rctx, name)
		cancel()
		if err != nil {
			return fmt.Errorf("restart %s: %w", name, err)
		}
	}
}

// progress prints the counters once a second until done is closed.
func progress(done <-chan struct{}, c *counters, actions int, dead *atomic.Uint64, log io.Writer) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			fmt.Fprintf(log, "[%4.0fs] sent %d/%d acked %d resent %d duplicate-acks %d ack-errors %d reconnects %d dead-letters %d\n",
				time.Since(start).Seconds(), c.sent.Load(), actions, c.acked.Load(), c.resent.Load(), c.dupAcks.Load(), c.nacks.Load(), c.reconnects.Load(), dead.Load())
		}
	}
}
