package dispatcher_test

import (
	"context"
	"database/sql"
	"errors"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/services/dispatcher"
)

// The idempotency pattern for reliable actions. Delivery is at least once:
// a dispatcher killed after the effect but before its acknowledgement
// reaches the stream gets the action delivered again, to any replica. So
// the handler records the action's key, (User, ID), in the same
// transaction as its effect; a second delivery finds the key and does
// nothing. A resend by the client within WS_INBOUND_DEDUPE never gets
// this far (the stream drops it); the key covers a redelivery, which may
// come at any time.
//
//	CREATE TABLE handled (user_id text, msg_id text, PRIMARY KEY (user_id, msg_id));
func Example_idempotent() {
	var db *sql.DB // your database
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	d, err := dispatcher.New(nc, dispatcher.WithReliable(dispatcher.ReliableOptions{
		MaxDeliver: 5,
		Backoff:    []time.Duration{time.Second, 5 * time.Second},
		AckWait:    30 * time.Second, // longer than the handler ever takes
	}))
	if err != nil {
		log.Fatal(err)
	}
	err = d.Handle("order/place", func(ctx context.Context, m *dispatcher.Message) error {
		var order struct {
			Item string `json:"item"`
		}
		if err := m.Decode(&order); err != nil {
			return err // a refusal: replied [400, ...], never retried
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err // retried after the backoff
		}
		defer tx.Rollback()
		if m.ID != "" { // a reliable action; core frames (no id) are at most once anyway
			res, err := tx.ExecContext(ctx,
				`INSERT INTO handled (user_id, msg_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, m.User, m.ID)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				// Done by an earlier delivery: answer again, change nothing.
				return m.Reply("order/placed", order.Item)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO orders (user_id, item) VALUES ($1, $2)`, m.User, order.Item); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return errors.Join(errors.New("order not placed"), err) // retried
		}
		// The reply goes to the user's session, so it reaches the tab even
		// when the connection that sent the order was replaced meanwhile.
		return m.Reply("order/placed", order.Item)
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		log.Fatal(err)
	}
}
