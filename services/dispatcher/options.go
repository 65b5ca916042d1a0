package dispatcher

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/wsgate/wsgate/api/wire"
)

// Defaults of Options (DESIGN.md §6: DISPATCHER_QUEUE, DISPATCHER_CONCURRENCY,
// WS_SUBJECT_PREFIX).
const (
	DefaultQueue       = "wsgate-dispatcher"
	DefaultConcurrency = 64
	DefaultPrefix      = wire.DefaultPrefix
)

// Options configure a Dispatcher. Change them with Option functions passed to
// New; the zero value is not meant to be used directly.
type Options struct {
	// Queue is the NATS queue group every replica joins, so that each
	// inbound message is handled by one replica only.
	Queue string
	// Concurrency bounds the handlers running at once, across all actions.
	Concurrency int
	// Prefix is the first token(s) of every subject ("ws" → ws.in.<action>).
	Prefix string
	// History makes the Sender publish stored targets through JetStream
	// (WithHistory).
	History bool
	// Logger receives handler failures, panics and undecodable envelopes.
	Logger *slog.Logger
	// Hooks observe what the dispatcher does, e.g. for metrics.
	Hooks Hooks
	// Tracer traces each handled message as a child of the edge's span
	// (W3C trace context from the NATS headers); default: the global
	// OpenTelemetry tracer provider's, a no-op unless one was installed.
	Tracer trace.Tracer
	// Reliable, when set (WithReliable), makes Handle's actions consumed
	// from the inbound stream too; nil: core NATS only.
	Reliable *ReliableOptions
}

// Option changes Options; it returns an error for a value it refuses.
type Option func(*Options) error

// Outcome says how a handler ended, for Hooks.Handled.
type Outcome string

// outcomeOf is how a handler that returned err (and panicked or not) ended.
func outcomeOf(err error, panicked bool) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case panicked:
		return OutcomePanic
	case refused(err):
		return OutcomeRefused
	}
	return OutcomeError
}

// Outcomes of a handler.
const (
	OutcomeOK      Outcome = "ok"      // returned nil
	OutcomeRefused Outcome = "refused" // refused the message: a 4xx *Error or ErrBadDetails (the client's fault)
	OutcomeError   Outcome = "error"   // returned any other error
	OutcomePanic   Outcome = "panic"   // panicked (recovered)
)

// Hooks are told what the dispatcher does; nil hooks are skipped. They run on
// the dispatcher's goroutines, so they must be fast and safe for concurrent use.
type Hooks struct {
	// Handled is called once per handled message, after any error reply was
	// published, with the time the handler took. action is the message's,
	// also when a prefix handler (HandlePrefix) handled it.
	Handled func(action string, outcome Outcome, took time.Duration)
	// DecodeFailed is called for each inbound message that is not a valid
	// envelope; such a message is dropped.
	DecodeFailed func(subject string, err error)
	// Reliable is called for what becomes of each delivery of a reliable
	// action (WithReliable): acked, retried, dead, redelivered, dropped.
	Reliable func(action string, ev ReliableEvent)
	// PrefixConsumer is called for what becomes of each reliable action
	// found under a HandlePrefix prefix (WithReliable): created, taken,
	// failed, limited.
	PrefixConsumer func(prefix, action string, ev PrefixConsumerEvent)
}

func defaultOptions() Options {
	return Options{
		Queue:       DefaultQueue,
		Concurrency: DefaultConcurrency,
		Prefix:      DefaultPrefix,
		Logger:      slog.New(slog.DiscardHandler),
		Tracer:      otel.GetTracerProvider().Tracer("github.com/wsgate/wsgate/services/dispatcher"),
	}
}

// WithTracer traces handled messages with t.
func WithTracer(t trace.Tracer) Option {
	return func(o *Options) error {
		if t == nil {
			return fmt.Errorf("%w: nil tracer", ErrInvalidOption)
		}
		o.Tracer = t
		return nil
	}
}

// WithQueue sets the queue group (default DefaultQueue). Replicas that share
// it share the work; replicas with different queues each get every message.
func WithQueue(name string) Option {
	return func(o *Options) error {
		if err := validateSubjectPart(name); err != nil {
			return fmt.Errorf("%w: queue: %w", ErrInvalidOption, err)
		}
		o.Queue = name
		return nil
	}
}

// WithConcurrency sets how many handlers may run at once (default
// DefaultConcurrency): the number of workers Start starts. When all are
// busy, up to 524,288 further messages (NATS's default pending limit of a
// subscription) wait for one; beyond that NATS drops them and reports a slow
// consumer.
func WithConcurrency(n int) Option {
	return func(o *Options) error {
		if n < 1 {
			return fmt.Errorf("%w: concurrency must be at least 1, got %d", ErrInvalidOption, n)
		}
		o.Concurrency = n
		return nil
	}
}

// WithPrefix sets the subject prefix (default DefaultPrefix); it must match
// the edges' WS_SUBJECT_PREFIX, which is one subject token, as an id is
// (the edges refuse a dotted one).
func WithPrefix(prefix string) Option {
	return func(o *Options) error {
		if err := wire.ValidateID(prefix); err != nil {
			return fmt.Errorf("%w: prefix: %w", ErrInvalidOption, err)
		}
		o.Prefix = prefix
		return nil
	}
}

// WithLogger sets the logger (default: discard everything).
func WithLogger(log *slog.Logger) Option {
	return func(o *Options) error {
		if log == nil {
			return fmt.Errorf("%w: nil logger", ErrInvalidOption)
		}
		o.Logger = log
		return nil
	}
}

// WithHooks sets the hooks that observe the dispatcher (default none).
func WithHooks(h Hooks) Option {
	return func(o *Options) error {
		o.Hooks = h
		return nil
	}
}

// validateSubjectPart checks a queue name: dot-separated tokens
// that are neither empty nor hold a wildcard or white space, which NATS would
// read as a different subject (or refuse).
func validateSubjectPart(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return fmt.Errorf("%q has an empty token", s)
		}
		if i := strings.IndexAny(tok, "*> \t\r\n"); i >= 0 {
			return fmt.Errorf("%q holds %q, a NATS wildcard or white space", s, tok[i])
		}
	}
	return nil
}
