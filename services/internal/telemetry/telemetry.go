// Package telemetry sets up OpenTelemetry for a service: metrics through the
// OTel metric API, exported as Prometheus text on /metrics, and traces
// exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or its _TRACES_
// variant) is set. W3C trace context is the propagator, so one trace can
// follow a message through NATS headers from edge to dispatcher and back.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// OTLP is the telemetry part of a service's configuration. The OTel SDK
// reads the other standard OTEL_* variables (service name, headers,
// sampler, resource attributes) itself.
type OTLP struct {
	OTLPEndpoint       string `envconfig:"OTEL_EXPORTER_OTLP_ENDPOINT" desc:"OTLP/HTTP endpoint for traces (e.g. http://otel-collector:4318); unset = no trace export"`
	OTLPTracesEndpoint string `envconfig:"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" desc:"OTLP/HTTP endpoint for traces only, overriding OTEL_EXPORTER_OTLP_ENDPOINT"`
}

// Telemetry is a service's tracer, meter and /metrics handler.
type Telemetry struct {
	Tracer     trace.Tracer
	Meter      metric.Meter
	Propagator propagation.TextMapPropagator
	metrics    http.Handler
	shutdown   []func(context.Context) error

	mu        sync.Mutex
	producers map[*sdkmetric.Producer]sdkmetric.Producer // owned by mu; see AddProducer
}

// Option changes Setup.
type Option func(*setup)

type setup struct {
	tp trace.TracerProvider
}

// WithTracerProvider uses tp for traces (tests pass one with an in-memory
// exporter) instead of building one from the configuration.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(s *setup) { s.tp = tp } }

// Setup builds the telemetry of service. Call Shutdown when done.
func Setup(ctx context.Context, cfg OTLP, service string, opts ...Option) (*Telemetry, error) {
	var s setup
	for _, o := range opts {
		o(&s)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithAttributes(semconv.ServiceName(service)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	t := &Telemetry{Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})}

	reg := prometheus.NewRegistry()
	// The Go runtime and the process (goroutines, heap, GC, RSS, open
	// files): what an operator looks at first when a pod misbehaves.
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo(),
		otelprom.WithProducer(producers{t}))
	if err != nil {
		return nil, fmt.Errorf("telemetry prometheus exporter: %w", err)
	}
	// No exemplars: offering each measurement to a reservoir costs more
	// than the measurement.
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter), sdkmetric.WithResource(res),
		sdkmetric.WithExemplarFilter(exemplar.AlwaysOffFilter))
	t.shutdown = append(t.shutdown, mp.Shutdown)
	t.Meter = mp.Meter("github.com/wsgate/wsgate/" + service)
	t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})

	tp := s.tp
	if tp == nil {
		tp = noop.NewTracerProvider()
		if cfg.OTLPEndpoint != "" || cfg.OTLPTracesEndpoint != "" {
			exp, err := otlptracehttp.New(ctx) // reads the OTEL_EXPORTER_OTLP_* variables
			if err != nil {
				return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %w", err)
			}
			sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
			t.shutdown = append(t.shutdown, sdk.Shutdown)
			tp = sdk
		}
	}
	t.Tracer = tp.Tracer("github.com/wsgate/wsgate/" + service)
	otel.SetTextMapPropagator(t.Propagator)
	return t, nil
}

// AddProducer serves p's metrics on /metrics with those of Meter, until the
// returned function is called. It is for metrics that the OTel API's
// instruments cannot record cheaply enough: the edge's delivery latency
// histogram, one measurement per frame written, which its owner keeps in
// sharded counters and hands over at scrape time.
func (t *Telemetry) AddProducer(p sdkmetric.Producer) (remove func()) {
	key := &p
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.producers == nil {
		t.producers = map[*sdkmetric.Producer]sdkmetric.Producer{}
	}
	t.producers[key] = p
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		delete(t.producers, key)
	}
}

// producers is the exporter's one producer: those added to t, at the time
// of each scrape.
type producers struct{ t *Telemetry }

func (ps producers) Produce(ctx context.Context) ([]metricdata.ScopeMetrics, error) {
	ps.t.mu.Lock()
	added := make([]sdkmetric.Producer, 0, len(ps.t.producers))
	for _, p := range ps.t.producers {
		added = append(added, p)
	}
	ps.t.mu.Unlock()
	var out []metricdata.ScopeMetrics
	var errs []error
	for _, p := range added {
		sm, err := p.Produce(ctx)
		out = append(out, sm...)
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// MetricsHandler serves the metrics as Prometheus text.
func (t *Telemetry) MetricsHandler() http.Handler { return t.metrics }

// Shutdown flushes and stops the exporters.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	for _, f := range t.shutdown {
		errs = append(errs, f(ctx))
	}
	return errors.Join(errs...)
}

// Must panics on err; instrument creation only fails on invalid names, which
// are constants in this repository.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
