package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// Sender pushes messages to clients and closes their connections by
// publishing on the <prefix>.send.* and <prefix>.ctl.close.* subjects
// (DESIGN.md §4). Any Go service can use one; it needs only a NATS
// connection. A Sender is safe for concurrent use.
//
// Every id and action is validated before a subject is built from it, so a
// bad id never reaches NATS (where "a.b" or "*" would address someone else):
// the method returns an error wrapping ErrInvalidID or ErrInvalidAction and
// publishes nothing. details are marshalled with encoding/json; a
// json.RawMessage is sent as is; nil details are sent absent (null).
//
// The ctx of each method is checked before publishing: a done ctx publishes
// nothing. Publishing itself does not block (NATS buffers it).
type Sender struct {
	nc       *nats.Conn          // static after construction
	subjects wire.Subjects       // static after construction
	js       jetstream.JetStream // static: set when history is on (SenderWithHistory)
}

// NewSender returns a Sender publishing on nc under prefix ("" means
// DefaultPrefix); prefix must match the edges' WS_SUBJECT_PREFIX.
func NewSender(nc *nats.Conn, prefix string, opts ...SenderOption) *Sender {
	s := &Sender{nc: nc, subjects: wire.NewSubjects(prefix)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ToUser sends [action, details] to every connection of user: every tab, on
// every edge.
func (s *Sender) ToUser(ctx context.Context, user, action string, details any) error {
	if err := checkID("user", user); err != nil {
		return err
	}
	data, err := encode(action, details, nil, nil)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendUser(user), data)
}

// ToUsers sends [action, details] to every connection of each user. All ids
// are checked before anything is published; a publish error stops the loop.
func (s *Sender) ToUsers(ctx context.Context, users []string, action string, details any) error {
	for _, u := range users {
		if err := checkID("user", u); err != nil {
			return err
		}
	}
	data, err := encode(action, details, nil, nil)
	if err != nil {
		return err
	}
	for _, u := range users {
		if err := s.publish(ctx, s.subjects.SendUser(u), data); err != nil {
			return err
		}
	}
	return nil
}

// ToGroup sends [action, details] to every connection whose user is in group.
func (s *Sender) ToGroup(ctx context.Context, group, action string, details any) error {
	if err := checkID("group", group); err != nil {
		return err
	}
	data, err := encode(action, details, nil, nil)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendGroup(group), data)
}

// ToSession sends [action, details] to every connection of session.
func (s *Sender) ToSession(ctx context.Context, session, action string, details any) error {
	if err := checkID("session", session); err != nil {
		return err
	}
	data, err := encode(action, details, nil, nil)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendSession(session), data)
}

// ToConnection sends [action, details, ref] to one connection, named
// "<edge>.<conn>" as in Message.Connection. ref may be nil (no ref); else it
// must be a JSON string of at most 64 characters or a JSON integer.
func (s *Sender) ToConnection(ctx context.Context, connection, action string, details any, ref json.RawMessage) error {
	if err := checkConnection(connection); err != nil {
		return err
	}
	data, err := encode(action, details, ref, nil)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendConn(connection), data)
}

// ToAll sends [action, details] to every connection, anonymous ones included.
func (s *Sender) ToAll(ctx context.Context, action string, details any) error {
	data, err := encode(action, details, nil, nil)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendAll(), data)
}

// ToRegistered sends [action, details] to every authenticated connection
// (the seed's SEND_TO_REGISTERED_USERS).
func (s *Sender) ToRegistered(ctx context.Context, action string, details any) error {
	data, err := encode(action, details, nil, nil)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendUsers(), data)
}

// ToFilter sends [action, details] to every connection whose property
// f.Property (language, ip, user_agent, origin or a props key) equals f.Value.
func (s *Sender) ToFilter(ctx context.Context, f wire.Filter, action string, details any) error {
	if f.Property == "" {
		return fmt.Errorf("%w: property is empty", ErrInvalidFilter)
	}
	data, err := encode(action, details, nil, &f)
	if err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.SendFilter(), data)
}

// CloseUser closes every connection of user: each gets ["Server/close", null]
// and is closed with 1000; the client does not reconnect.
func (s *Sender) CloseUser(ctx context.Context, user string) error {
	if err := checkID("user", user); err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.CloseUser(user), nil)
}

// CloseSession closes every connection of session, as CloseUser does.
func (s *Sender) CloseSession(ctx context.Context, session string) error {
	if err := checkID("session", session); err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.CloseSession(session), nil)
}

// CloseConnection closes one connection ("<edge>.<conn>"), as CloseUser does.
func (s *Sender) CloseConnection(ctx context.Context, connection string) error {
	if err := checkConnection(connection); err != nil {
		return err
	}
	return s.publish(ctx, s.subjects.CloseConn(connection), nil)
}

// publish sends data on subject unless ctx is already done.
func (s *Sender) publish(ctx context.Context, subject string, data []byte) error {
	_, err := s.publishSeq(ctx, subject, data)
	return err
}

// publishSeq is publish returning the history sequence that stored the
// message (0 when it was not published through the history).
func (s *Sender) publishSeq(ctx context.Context, subject string, data []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrPublish, subject, err)
	}
	msg := &nats.Msg{Subject: subject, Data: data}
	if trace.SpanContextFromContext(ctx).IsValid() {
		// W3C trace context in the headers (DESIGN.md §4): the edge's
		// delivery joins the trace of whatever published this.
		msg.Header = nats.Header{}
		propagation.TraceContext{}.Inject(ctx, telemetry.NATSHeader(msg.Header))
	}
	if s.js != nil && s.stored(subject) {
		return s.publishStored(ctx, msg)
	}
	if err := s.nc.PublishMsg(msg); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrPublish, subject, err)
	}
	return 0, nil
}

// checkID validates one id; kind names it in the error.
func checkID(kind, id string) error {
	if err := wire.ValidateID(id); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidID, kind, err)
	}
	return nil
}

// checkConnection validates "<edge>.<conn>": two ids joined by one dot, so
// the subject gets exactly the two tokens the edge subscribes to.
func checkConnection(connection string) error {
	edge, conn, ok := strings.Cut(connection, ".")
	if !ok {
		return fmt.Errorf("%w: connection: want <edge>.<conn>", ErrInvalidID)
	}
	if err := checkID("connection edge", edge); err != nil {
		return err
	}
	return checkID("connection conn", conn)
}

// encode validates action and ref and returns the outbound message.
func encode(action string, details any, ref json.RawMessage, f *wire.Filter) ([]byte, error) {
	if err := wire.ValidateOutboundAction(action); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAction, err)
	}
	if err := wire.ValidateRef(ref); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRef, err)
	}
	if r := bytes.TrimSpace(ref); len(r) == 0 || string(r) == "null" {
		ref = nil // absent: the outbound schema has no null ref
	}
	raw, err := encodeDetails(details)
	if err != nil {
		return nil, err
	}
	if err := wire.ValidateOutboundDetails(action, raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidErrorDetails, err)
	}
	return wire.AppendOutbound(nil, &wire.Outbound{Action: action, Details: raw, Ref: ref, Filter: f}), nil
}

// encodeDetails marshals details; json.RawMessage is checked and
// compacted, as json.Marshal would, and nil stays absent.
func encodeDetails(details any) (json.RawMessage, error) {
	switch d := details.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if len(d) == 0 {
			return nil, nil
		}
		var b bytes.Buffer
		if err := json.Compact(&b, d); err != nil {
			return nil, fmt.Errorf("%w: details: %w", ErrEncode, err)
		}
		return b.Bytes(), nil
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEncode, err)
	}
	return raw, nil
}
