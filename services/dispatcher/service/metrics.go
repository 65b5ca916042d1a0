package service

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// durationBuckets are the upper bounds, in seconds, of the handler duration
// buckets: from a cache hit to a slow downstream call.
var durationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}

// outcomes are every dispatcher.Outcome, each with a series from the start.
var outcomes = []dispatcher.Outcome{dispatcher.OutcomeOK, dispatcher.OutcomeRefused, dispatcher.OutcomeError, dispatcher.OutcomePanic}

// counters holds the dispatcher's metrics, recorded through the OTel metric
// API. The Prometheus exporter turns the dotted names into
// wsgate_dispatcher_messages_total{action,outcome},
// wsgate_dispatcher_handler_duration_seconds{action} (a histogram),
// wsgate_dispatcher_decode_errors_total and
// wsgate_dispatcher_handlers_in_flight.
type counters struct {
	messages metric.Int64Counter     // action, outcome
	duration metric.Float64Histogram // action
	decode   metric.Int64Counter

	// byAction holds the attribute options of each action, and of each
	// prefix (keyed "<prefix>*"), so the hot path builds no attribute set;
	// written by prepare before the dispatcher starts, then read-only, like
	// prefixes.
	byAction map[string]*actionAttrs
	prefixes []string // longest first
}

// actionAttrs are one action's attribute options.
type actionAttrs struct {
	outcomes map[dispatcher.Outcome]metric.AddOption
	duration metric.RecordOption
}

func newCounters(meter metric.Meter) *counters {
	return &counters{
		messages: telemetry.Must(meter.Int64Counter("wsgate.dispatcher.messages",
			metric.WithDescription("Inbound messages handled, by action and outcome (ok, refused: a 4xx answer, error, panic)."))),
		duration: telemetry.Must(meter.Float64Histogram("wsgate.dispatcher.handler.duration", metric.WithUnit("s"),
			metric.WithDescription("Time spent in handlers, by action."),
			metric.WithExplicitBucketBoundaries(durationBuckets...))),
		decode: telemetry.Must(meter.Int64Counter("wsgate.dispatcher.decode_errors",
			metric.WithDescription("Inbound messages dropped because they were not valid envelopes."))),
		byAction: map[string]*actionAttrs{},
	}
}

// prepare creates the series of actions and prefixes (longest first, as
// Dispatcher.Prefixes returns them), so that every message count exists (at
// 0) from the start and the hot path finds its attributes without a lock.
// The actions a prefix handles share its series, labelled
// action="<prefix>*": one per action would let clients grow the series
// without bound. It also observes d's handlers in flight.
func (t *counters) prepare(meter metric.Meter, d *dispatcher.Dispatcher) {
	ctx := context.Background()
	t.prefixes = d.Prefixes()
	actions := d.Actions()
	for _, p := range t.prefixes {
		actions = append(actions, p+"*")
	}
	for _, a := range actions {
		action := attribute.String("action", a)
		c := &actionAttrs{
			outcomes: map[dispatcher.Outcome]metric.AddOption{},
			duration: metric.WithAttributeSet(attribute.NewSet(action)),
		}
		for _, o := range outcomes {
			opt := metric.WithAttributeSet(attribute.NewSet(action, attribute.String("outcome", string(o))))
			c.outcomes[o] = opt
			t.messages.Add(ctx, 0, opt)
		}
		t.byAction[a] = c
	}
	t.decode.Add(ctx, 0)
	_ = telemetry.Must(meter.Int64ObservableGauge("wsgate.dispatcher.handlers.in_flight",
		metric.WithDescription("Handlers running now."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(d.InFlight()))
			return nil
		})))
}

// label is the action label of action's series: its own for an action with
// a handler, "<prefix>*" for one a prefix handles (see prepare). Valid once
// prepared.
func (t *counters) label(action string) string {
	if _, own := t.byAction[action]; own {
		return action
	}
	if p, ok := dispatcher.MatchPrefix(t.prefixes, action); ok {
		return p + "*"
	}
	return action
}

// hooks returns the dispatcher hooks that feed the counters.
func (t *counters) hooks() dispatcher.Hooks {
	ctx := context.Background()
	return dispatcher.Hooks{
		Handled: func(action string, outcome dispatcher.Outcome, took time.Duration) {
			c, ok := t.byAction[action]
			if !ok {
				p, found := dispatcher.MatchPrefix(t.prefixes, action)
				if !found {
					return // only prepared actions and prefixes are handled
				}
				c = t.byAction[p+"*"]
			}
			t.messages.Add(ctx, 1, c.outcomes[outcome])
			t.duration.Record(ctx, took.Seconds(), c.duration)
		},
		DecodeFailed: func(string, error) { t.decode.Add(ctx, 1) },
	}
}
