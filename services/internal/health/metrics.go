package health

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// Observe registers the gauge name: 1 while the probe is ready (what
// /readyz answers with 200), else 0, read at scrape time. It lets an alert
// see an unready pod without a second scraper of /readyz.
func (p *Probe) Observe(meter metric.Meter, name string) error {
	_, err := meter.Int64ObservableGauge(name,
		metric.WithDescription("1 while this process is ready (/readyz answers 200), else 0."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			var v int64
			if p.Ready() == nil {
				v = 1
			}
			o.Observe(v)
			return nil
		}))
	return err
}
