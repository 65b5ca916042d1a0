package service

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/metrics"
)

// durationBuckets are the upper bounds, in seconds, of the handler duration
// buckets: from a cache hit to a slow downstream call.
var durationBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5}

// counters holds the dispatcher's metrics. The registry only has integer
// counters, so durations are a histogram made of counters: cumulative
// buckets (histogram_quantile works on them, it reads only the le label) and
// the total in microseconds.
type counters struct {
	messages *metrics.CounterVec // action, outcome
	buckets  *metrics.CounterVec // action, le
	micros   *metrics.CounterVec // action
	decode   *metrics.CounterVec

	// byAction caches the counters of each action, and of each prefix
	// (keyed "<prefix>*"), so the hot path takes no lock; written by prepare
	// before the dispatcher starts, then read-only, like prefixes.
	byAction map[string]*actionCounters
	prefixes []string // longest first
}

// actionCounters are one action's counters.
type actionCounters struct {
	outcomes map[dispatcher.Outcome]*atomic.Uint64
	buckets  []*atomic.Uint64 // one per durationBuckets, then +Inf
	micros   *atomic.Uint64
}

func newCounters(reg *metrics.Registry) *counters {
	return &counters{
		messages: reg.Counter("wsgate_dispatcher_messages_total",
			"Inbound messages handled, by action and outcome (ok, error, panic).", "action", "outcome"),
		buckets: reg.Counter("wsgate_dispatcher_handler_duration_seconds_bucket",
			"Handlers that took at most le seconds, by action (cumulative buckets).", "action", "le"),
		micros: reg.Counter("wsgate_dispatcher_handler_duration_microseconds_total",
			"Time spent in handlers, in microseconds, by action.", "action"),
		decode: reg.Counter("wsgate_dispatcher_decode_errors_total",
			"Inbound messages dropped because they were not valid envelopes."),
		byAction: map[string]*actionCounters{},
	}
}

// prepare creates the counters of actions and prefixes (longest first, as
// Dispatcher.Prefixes returns them), so that every series exists (at 0) from
// the start and the hot path finds them without a lock. The actions a prefix
// handles share its series, labelled action="<prefix>*": one per action
// would let clients grow the series without bound.
func (t *counters) prepare(actions, prefixes []string) {
	t.prefixes = prefixes
	for _, p := range prefixes {
		actions = append(actions, p+"*")
	}
	for _, a := range actions {
		c := &actionCounters{
			outcomes: map[dispatcher.Outcome]*atomic.Uint64{},
			micros:   t.micros.With(a),
		}
		for _, o := range []dispatcher.Outcome{dispatcher.OutcomeOK, dispatcher.OutcomeError, dispatcher.OutcomePanic} {
			c.outcomes[o] = t.messages.With(a, string(o))
		}
		for _, le := range durationBuckets {
			c.buckets = append(c.buckets, t.buckets.With(a, strconv.FormatFloat(le, 'g', -1, 64)))
		}
		c.buckets = append(c.buckets, t.buckets.With(a, "+Inf"))
		t.byAction[a] = c
	}
}

// hooks returns the dispatcher hooks that feed the counters.
func (t *counters) hooks() dispatcher.Hooks {
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
			c.outcomes[outcome].Add(1)
			c.micros.Add(uint64(took.Microseconds()))
			s := took.Seconds()
			for i, le := range durationBuckets {
				if s <= le {
					c.buckets[i].Add(1)
				}
			}
			c.buckets[len(durationBuckets)].Add(1)
		},
		DecodeFailed: func(string, error) { t.decode.Inc() },
	}
}
