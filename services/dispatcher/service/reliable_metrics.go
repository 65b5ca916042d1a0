package service

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/wsgate/wsgate/services/dispatcher"
	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// pendingTimeout bounds the consumer queries of one metrics scrape.
const pendingTimeout = 2 * time.Second

// reliableCounters are the metrics of reliable inbound (DESIGN.md §8):
// wsgate_dispatcher_reliable_total{action,event} (acked, retried, dead,
// redelivered, dropped), wsgate_dispatcher_reliable_pending{action}, the
// actions waiting in each consumer, and
// wsgate_dispatcher_reliable_prefix_consumers_total{prefix,event} (created,
// taken, failed, limited), the actions found under prefixes. The actions a
// prefix handles share its "<prefix>*" series.
type reliableCounters struct {
	events   metric.Int64Counter // action, event
	prefixes metric.Int64Counter // prefix, event
}

func newReliableCounters(meter metric.Meter) *reliableCounters {
	return &reliableCounters{
		events: telemetry.Must(meter.Int64Counter("wsgate.dispatcher.reliable",
			metric.WithDescription("Deliveries of reliable actions by action and event: acked, retried, dead (dead letters), redelivered, dropped."))),
		prefixes: telemetry.Must(meter.Int64Counter("wsgate.dispatcher.reliable.prefix_consumers",
			metric.WithDescription("Reliable actions found under HandlePrefix prefixes, by prefix and event: created (got a consumer), taken (left to another service's consumer), failed, limited (over DISPATCHER_PREFIX_CONSUMERS_MAX, not consumed)."))),
	}
}

// hooks returns h with the Reliable and PrefixConsumer hooks feeding the
// counters. label maps an action to its series (counters.label), so that
// the actions clients choose under a prefix do not grow the series.
func (r *reliableCounters) hooks(h dispatcher.Hooks, label func(string) string) dispatcher.Hooks {
	h.Reliable = func(action string, ev dispatcher.ReliableEvent) {
		r.events.Add(context.Background(), 1, metric.WithAttributes(
			attribute.String("action", label(action)), attribute.String("event", string(ev))))
	}
	h.PrefixConsumer = func(prefix, _ string, ev dispatcher.PrefixConsumerEvent) {
		r.prefixes.Add(context.Background(), 1, metric.WithAttributes(
			attribute.String("prefix", prefix), attribute.String("event", string(ev))))
	}
	return h
}

// observePending exposes each consumer's pending actions, asked of the
// NATS server at each scrape, summed per series of label.
func (r *reliableCounters) observePending(meter metric.Meter, d *dispatcher.Dispatcher, log *slog.Logger, label func(string) string) {
	_ = telemetry.Must(meter.Int64ObservableGauge("wsgate.dispatcher.reliable.pending",
		metric.WithDescription("Reliable actions waiting in the dispatcher's consumer, by action: not delivered yet or not answered."),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			ctx, cancel := context.WithTimeout(ctx, pendingTimeout)
			defer cancel()
			pending, err := d.ReliablePending(ctx)
			if err != nil {
				log.Debug("reliable pending not observed", "err", err)
			}
			sums := map[string]int64{}
			for action, n := range pending {
				sums[label(action)] += int64(n)
			}
			for l, n := range sums {
				o.Observe(n, metric.WithAttributes(attribute.String("action", l)))
			}
			return nil
		})))
}
