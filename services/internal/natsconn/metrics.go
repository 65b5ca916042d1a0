package natsconn

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"
)

// ObserveConnected registers the gauge <name> (1 while nc is connected to a
// NATS server, else 0), read at scrape time. Dashboards show it per pod and
// the NATSDisconnected alert fires on it.
func ObserveConnected(meter metric.Meter, name string, nc *nats.Conn) error {
	_, err := meter.Int64ObservableGauge(name,
		metric.WithDescription("1 while this process is connected to a NATS server, else 0."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			var v int64
			if nc.IsConnected() {
				v = 1
			}
			o.Observe(v)
			return nil
		}))
	return err
}
