package history

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/wsgate/wsgate/services/internal/telemetry"
)

// metrics are the history's instruments.
type metrics struct {
	replays  metric.Int64Counter
	messages metric.Int64Counter
	failures metric.Int64Counter
	duration metric.Float64Histogram
}

func newMetrics(meter metric.Meter) *metrics {
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	m := &metrics{
		replays: telemetry.Must(meter.Int64Counter("wsgate.edge.history.replays",
			metric.WithDescription("Recoveries that replayed the missed messages completely (recovered: true)."))),
		messages: telemetry.Must(meter.Int64Counter("wsgate.edge.history.replayed",
			metric.WithDescription("Messages replayed to recovering connections."))),
		failures: telemetry.Must(meter.Int64Counter("wsgate.edge.history.unrecovered",
			metric.WithDescription("Recoveries answered recovered: false, by reason (invalid, epoch, ahead, limits, unavailable)."))),
		duration: telemetry.Must(meter.Float64Histogram("wsgate.edge.history.replay.duration", metric.WithUnit("s"),
			metric.WithDescription("Time of a complete recovery, from the wait for a replay slot to the last message read."),
			metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))),
	}
	m.replays.Add(context.Background(), 0)
	m.messages.Add(context.Background(), 0)
	return m
}

func (m *metrics) replayed(ctx context.Context, n int, d time.Duration) {
	m.replays.Add(ctx, 1)
	m.messages.Add(ctx, int64(n))
	m.duration.Record(ctx, d.Seconds())
}

func (m *metrics) unrecovered(ctx context.Context, reason string) {
	m.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}
