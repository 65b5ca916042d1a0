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
// redelivered, dropped) and wsgate_dispatcher_reliable_pending{action}, the
// actions waiting in each consumer.
type reliableCounters struct {
	events metric.Int64Counter // action, event
}

func newReliableCounters(meter metric.Meter) *reliableCounters {
	return &reliableCounters{
		events: telemetry.Must(meter.Int64Counter("wsgate.dispatcher.reliable",
			metric.WithDescription("Deliveries of reliable actions by action and event: acked, retried, dead (dead letters), redelivered, dropped."))),
	}
}

// hooks returns h with the Reliable hook feeding the counter. The action is
// a handler's own (exact actions only are consumed reliably), so the series
// stay bounded.
func (r *reliableCounters) hooks(h dispatcher.Hooks) dispatcher.Hooks {
	h.Reliable = func(action string, ev dispatcher.ReliableEvent) {
		r.events.Add(context.Background(), 1, metric.WithAttributes(
			attribute.String("action", action), attribute.String("event", string(ev))))
	}
	return h
}

// observePending exposes each consumer's pending actions, asked of the
// NATS server at each scrape.
func (r *reliableCounters) observePending(meter metric.Meter, d *dispatcher.Dispatcher, log *slog.Logger) {
	_ = telemetry.Must(meter.Int64ObservableGauge("wsgate.dispatcher.reliable.pending",
		metric.WithDescription("Reliable actions waiting in the dispatcher's consumer, by action: not delivered yet or not answered."),
		metric.WithInt64Callback(func(ctx context.Context, o metric.Int64Observer) error {
			ctx, cancel := context.WithTimeout(ctx, pendingTimeout)
			defer cancel()
			pending, err := d.ReliablePending(ctx)
			if err != nil {
				log.Debug("reliable pending not observed", "err", err)
			}
			for action, n := range pending {
				o.Observe(int64(n), metric.WithAttributes(attribute.String("action", action)))
			}
			return nil
		})))
}
