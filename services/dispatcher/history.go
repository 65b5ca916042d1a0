package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/api/wire"
)

// ErrNotStored is wrapped when history is on and the history stream did
// not confirm that it stored a message (no stream, or no answer in time):
// clients may not get it, and a reconnecting one cannot recover it.
var ErrNotStored = errors.New("dispatcher: message not stored in the history")

// SenderOption changes how NewSender builds a Sender.
type SenderOption func(*Sender)

// SenderWithHistory makes the Sender publish every message to a stored
// target (all, users, filter, a user, group or session; not a connection)
// through JetStream, and wait for the history stream's acknowledgement
// (DESIGN.md §8): a method returns nil only once the message is stored,
// else an error wrapping ErrNotStored. Use it when the edges run with
// WS_HISTORY on; Send reports the stored sequence.
func SenderWithHistory() SenderOption {
	return func(s *Sender) {
		js, err := jetstream.New(s.nc)
		if err == nil { // it fails only for a nil connection
			s.js = js
		}
	}
}

// WithHistory makes the dispatcher's Sender use SenderWithHistory.
func WithHistory() Option {
	return func(o *Options) error {
		o.History = true
		return nil
	}
}

func senderOptions(o Options) []SenderOption {
	if o.History {
		return []SenderOption{SenderWithHistory()}
	}
	return nil
}

// Targets of Send, as in the HTTP send API.
const (
	TargetAll     = "all"
	TargetUsers   = "users"
	TargetUser    = "user"
	TargetGroup   = "group"
	TargetSession = "session"
	TargetConn    = "conn"
	TargetFilter  = "filter"
)

// Target names the recipients of one Send.
type Target struct {
	// Kind is one of the Target* constants.
	Kind string
	// ID is the user, group, session or "<edge>.<conn>" connection.
	ID string
	// Filter selects the connections of TargetFilter.
	Filter wire.Filter
}

// Send sends [action, details] to target and returns the history sequence
// that stored it: 0 without history (SenderWithHistory) and for a
// connection, whose replies are never stored.
func (s *Sender) Send(ctx context.Context, target Target, action string, details any) (uint64, error) {
	var subject string
	var filter *wire.Filter
	switch target.Kind {
	case TargetAll:
		subject = s.subjects.SendAll()
	case TargetUsers:
		subject = s.subjects.SendUsers()
	case TargetUser, TargetGroup, TargetSession:
		if err := checkID(target.Kind, target.ID); err != nil {
			return 0, err
		}
		subject = s.subjects.Prefix + ".send." + target.Kind + "." + target.ID
	case TargetConn:
		if err := checkConnection(target.ID); err != nil {
			return 0, err
		}
		subject = s.subjects.SendConn(target.ID)
	case TargetFilter:
		if target.Filter.Property == "" {
			return 0, fmt.Errorf("%w: property is empty", ErrInvalidFilter)
		}
		subject, filter = s.subjects.SendFilter(), &target.Filter
	default:
		return 0, fmt.Errorf("%w: unknown target kind %q", ErrInvalidID, target.Kind)
	}
	data, err := encode(action, details, nil, filter)
	if err != nil {
		return 0, err
	}
	return s.publishSeq(ctx, subject, data)
}

// stored reports whether the history stream stores subject: every send
// target except conn.
func (s *Sender) stored(subject string) bool {
	rest, ok := strings.CutPrefix(subject, s.subjects.Prefix+".send.")
	return ok && !strings.HasPrefix(rest, "conn.")
}

// publishStored publishes msg through JetStream and waits for the stream's
// acknowledgement (within ctx's deadline, else the JetStream default).
func (s *Sender) publishStored(ctx context.Context, msg *nats.Msg) (uint64, error) {
	ack, err := s.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrNotStored, msg.Subject, err)
	}
	return ack.Sequence, nil
}
