// Command counthandler is the handler of the load tool's long reliable-
// inbound run (bench/cmd/inboundrun): a dispatcher built with the SDK
// (dispatcher.WithReliable) whose one action, "count", records every
// delivery it gets in a file, with the idempotency pattern of the SDK's
// Example_idempotent: the action's key (User, ID) is checked and recorded
// together with its effect, so a redelivery (after a dispatcher was killed
// between the effect and the acknowledgement) changes nothing.
//
// Each delivery appends one line, "<user>.<id> <attempt> <new|seen>", with
// one write(2) before the handler returns: the bytes are in the kernel's
// page cache when the stream hears the acknowledgement, so a SIGKILL of this
// process cannot lose them (a machine crash could; the run does not crash
// machines). At start the file is read back: the keys in it are the
// effects already done. The load tool reads the file after the run and
// counts, per action, its effects ("new": must be exactly one) and its
// deliveries.
//
//	counthandler -file handled.log -ack-wait 2s
//
// NATS_URL is the server; it prints the dispatcher service's "dispatcher
// subscribed" log line once it consumes, and drains on SIGTERM.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/dispatcher"
)

// Action is the action the handler serves.
const Action = "count"

// Timing of start and stop.
const (
	startRetry   = 200 * time.Millisecond
	startTimeout = 60 * time.Second
	drainTimeout = 5 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv("NATS_URL"), os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "counthandler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, natsURL string, stdout io.Writer) error {
	fs := flag.NewFlagSet("counthandler", flag.ContinueOnError)
	file := fs.String("file", "handled.log", "where every delivery is recorded")
	stream := fs.String("stream", dispatcher.DefaultStream, "the inbound stream (WS_INBOUND_STREAM)")
	ackWait := fs.Duration("ack-wait", 2*time.Second, "how long a delivery may go unanswered before it is delivered again")
	maxDeliver := fs.Int("max-deliver", dispatcher.DefaultMaxDeliver, "deliveries before a dead letter")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if natsURL == "" {
		natsURL = nats.DefaultURL
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	rec, err := openRecorder(*file)
	if err != nil {
		return err
	}
	defer rec.close()
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	d, err := dispatcher.New(nc, dispatcher.WithLogger(log), dispatcher.WithReliable(dispatcher.ReliableOptions{
		Stream: *stream, MaxDeliver: *maxDeliver, AckWait: *ackWait,
		Backoff: []time.Duration{100 * time.Millisecond},
	}))
	if err != nil {
		return err
	}
	if err := d.Handle(Action, rec.handle); err != nil {
		return err
	}
	// The edges create the stream: until then Start fails and is tried again.
	deadline := time.Now().Add(startTimeout)
	for {
		err := d.Start(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(startRetry):
		}
	}
	log.Info("dispatcher subscribed", "actions", d.Actions(), "queue", "wsgate-dispatchers", "seen", rec.seenCount())
	<-ctx.Done()
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	return d.Drain(dctx)
}

// recorder is the effect and its idempotency record in one: the set of
// keys done, and the file that lists every delivery.
type recorder struct {
	mu   sync.Mutex
	f    *os.File            // owned by mu
	done map[string]struct{} // owned by mu: keys whose effect happened
	line []byte              // owned by mu: reused
}

// openRecorder opens path for appending and reads back the keys already done.
func openRecorder(path string) (*recorder, error) {
	r := &recorder{done: map[string]struct{}{}}
	if data, err := os.ReadFile(path); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f := bytes.Fields(sc.Bytes())
			if len(f) == 3 && string(f[2]) == "new" {
				r.done[string(f[0])] = struct{}{}
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	r.f = f
	return r, nil
}

func (r *recorder) seenCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.done)
}

func (r *recorder) close() { _ = r.f.Close() }

// handle records one delivery. An error retries it (the stream delivers it
// again after the backoff).
func (r *recorder) handle(_ context.Context, m *dispatcher.Message) error {
	if m.ID == "" {
		return nil // a core frame: not part of the run
	}
	key := m.User + "." + m.ID
	r.mu.Lock()
	defer r.mu.Unlock()
	_, seen := r.done[key]
	effect := "new"
	if seen {
		effect = "seen"
	}
	r.line = append(append(append(append(append(r.line[:0], key...), ' '), strconv.Itoa(m.Attempt)...), ' '), effect...)
	r.line = append(r.line, '\n')
	if _, err := r.f.Write(r.line); err != nil {
		return fmt.Errorf("record: %w", err)
	}
	r.done[key] = struct{}{}
	return nil
}
