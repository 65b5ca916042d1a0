package dispatcher_test

import (
	"context"
	"log"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/dispatcher"
)

// A dispatcher with one handler that answers the client that asked, and
// tells every tab of its user. It runs until SIGTERM, then lets the
// in-flight handlers finish.
func ExampleDispatcher_Handle() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	d, err := dispatcher.New(nc, dispatcher.WithQueue("greeters"))
	if err != nil {
		log.Fatal(err)
	}
	err = d.Handle("greet", func(ctx context.Context, m *dispatcher.Message) error {
		var req struct {
			Name string `json:"name"`
		}
		if err := m.Decode(&req); err != nil {
			return err // the client gets ["greet:error", [400, "Invalid details"], ref]
		}
		if req.Name == "" {
			return dispatcher.NewError(400, "name is required")
		}
		// To the tab that asked, with its ref: ["greet", "Hello, Ada!", ref].
		if err := m.Reply("greet", "Hello, "+req.Name+"!"); err != nil {
			return err
		}
		if m.User == "" {
			return nil // anonymous: no other tabs to tell
		}
		return m.Sender().ToUser(ctx, m.User, "greeted", req.Name)
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		log.Fatal(err)
	}
	<-ctx.Done()

	drainCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Drain(drainCtx); err != nil {
		log.Print(err)
	}
}

// Any Go service can push to browsers without handling actions: here a
// billing job tells one user, on every tab, that an invoice is ready.
func ExampleSender_ToUser() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	s := dispatcher.NewSender(nc, "ws")
	err = s.ToUser(context.Background(), "42", "invoice/ready", map[string]any{"id": "INV-7", "total": 1250})
	if err != nil {
		log.Fatal(err)
	}
	// Publishing is buffered: flush before exiting so the message leaves.
	if err := nc.Flush(); err != nil {
		log.Fatal(err)
	}
}
