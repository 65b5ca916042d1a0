package presencekv

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// eventTimeout bounds the wait for the inbound stream to store an event.
const eventTimeout = 5 * time.Second

// PublishEvent publishes a user lifecycle event (Client/online,
// Client/offline, a reaped connection's Client/disconnection) whose
// envelope is data. With reliable inbound on (inqSubject set) it goes
// through the inbound stream on inqSubject, stored once whatever the
// retries thanks to msgID (DESIGN §8: lifecycle events take the same
// stream); otherwise it is a core publish on inSubject.
func PublishEvent(ctx context.Context, nc *nats.Conn, data []byte, msgID, inSubject, inqSubject string) error {
	msg := &nats.Msg{Subject: inSubject, Data: data, Header: nats.Header{nats.MsgIdHdr: []string{msgID}}}
	if inqSubject == "" {
		return nc.PublishMsg(msg)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("presence: event: %w", err)
	}
	msg.Subject = inqSubject
	ctx, cancel := context.WithTimeout(ctx, eventTimeout)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("presence: event not stored: %w", err)
	}
	return nil
}
