package dispatcher

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/api/wire"
)

// Message is one inbound envelope (DESIGN.md §4) handed to a handler: the
// client's action, details and ref, and the identity of its connection, which
// the edge took from the token, never from the frame. Its exported fields are
// those of wire.Envelope: Action, Details, Ref, User (empty when anonymous),
// Session, Groups, Language, Connection ("<edge>.<conn>"), Edge, IP,
// UserAgent and TS. Details is never empty: absent details are null.
//
// A Message belongs to one handler call; its methods are safe to call from
// goroutines the handler starts, but not after the handler returned.
type Message struct {
	wire.Envelope

	// ID is the message id the client gave a reliable action (DESIGN.md
	// §8), unique per user within the edges' dedupe window; "" for a frame
	// from core NATS. Lifecycle events from the inbound stream have an id
	// that is unique per event, not one to read meaning into: an edge's
	// Client/authentication and Client/disconnection have "auth" and
	// "disc" (unique per Connection), the Client/disconnection a dispatcher
	// publishes for a dead edge's connection has the connection's id, and
	// Client/online and Client/offline have the presence revision that
	// fired them.
	ID string
	// Attempt is 1 for the first delivery of a message, 2 for the next, ...
	// (only reliable actions are delivered again).
	Attempt int

	sender  *Sender     // static after construction
	header  nats.Header // static after construction; see Header
	replied atomic.Bool // set by a successful Reply or ReplyError
	// trace carries the handler span only (no deadline or cancellation), so
	// that replies join the message's trace.
	trace context.Context
}

// Header returns the NATS headers the edge set on the envelope: the W3C
// traceparent and tracestate and a Nats-Msg-Id unique per frame (the
// wire.Header* names). It may be nil; it is shared, so do not modify it.
func (m *Message) Header() nats.Header { return m.header }

// Reply sends [action, details, ref] to the originating connection, with the
// ref the client gave, so it can match the answer to its request. The reply
// to a reliable action (ID set) goes to the client's session instead, or its
// user when the token has no session, so that it reaches the connection
// that replaced the original one; the client ignores refs it does not wait
// for (see WithReliable).
func (m *Message) Reply(action string, details any) error {
	// Reply has no ctx of its own (the seed API has none); m.trace never
	// stops a reply and only lends it the handler's trace.
	ctx := m.trace
	if ctx == nil {
		ctx = context.Background()
	}
	if err := m.replyTarget(ctx, action, details); err != nil {
		return err
	}
	m.replied.Store(true)
	return nil
}

// ReplyError sends ["<action>:error", [code, message], ref] to the
// originating connection. code must be an HTTP error status (400–599).
func (m *Message) ReplyError(code int, message string) error {
	if !wire.ValidErrorCode(code) {
		return fmt.Errorf("%w: %d is not in 400–599", ErrInvalidCode, code)
	}
	return m.Reply(wire.ErrorAction(m.Action), wire.Error{Code: code, Message: message})
}

// Replied reports whether Reply or ReplyError has succeeded. The dispatcher
// uses it to not send an error reply after the handler's own reply.
func (m *Message) Replied() bool { return m.replied.Load() }

// Decode unmarshals the details into v. Its error wraps ErrBadDetails; a
// handler may return it as is, and the client gets [400, "Invalid details"].
func (m *Message) Decode(v any) error {
	if err := json.Unmarshal(m.Details, v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadDetails, err)
	}
	return nil
}

// Sender returns the dispatcher's Sender, to reach other users, groups,
// sessions or everyone from a handler.
func (m *Message) Sender() *Sender { return m.sender }
