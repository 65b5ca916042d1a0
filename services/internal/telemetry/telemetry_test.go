package telemetry

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// histogramProducer produces one cumulative histogram of 3 measurements.
type histogramProducer struct{}

func (histogramProducer) Produce(context.Context) ([]metricdata.ScopeMetrics, error) {
	return []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: "test"},
		Metrics: []metricdata.Metrics{{
			Name: "test.latency", Unit: "s",
			Data: metricdata.Histogram[float64]{
				Temporality: metricdata.CumulativeTemporality,
				DataPoints: []metricdata.HistogramDataPoint[float64]{{
					Bounds: []float64{0.1, 1}, BucketCounts: []uint64{1, 1, 1}, Count: 3, Sum: 4.55,
				}},
			},
		}},
	}}, nil
}

// TestAddProducer_ServesItsMetricsUntilRemoved: a producer's metrics are on
// /metrics, as Prometheus histograms, beside the meter's, until removed.
func TestAddProducer_ServesItsMetricsUntilRemoved(t *testing.T) {
	tel, err := Setup(context.Background(), OTLP{}, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	scrape := func() string {
		rec := httptest.NewRecorder()
		tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		body, _ := io.ReadAll(rec.Result().Body)
		if rec.Code != 200 {
			t.Fatalf("/metrics %d: %s", rec.Code, body)
		}
		return string(body)
	}
	remove := tel.AddProducer(histogramProducer{})
	body := scrape()
	for _, line := range []string{`test_latency_seconds_bucket{le="0.1"} 1`, `test_latency_seconds_bucket{le="1"} 2`,
		`test_latency_seconds_bucket{le="+Inf"} 3`, `test_latency_seconds_sum 4.55`, `test_latency_seconds_count 3`, "go_goroutines "} {
		if !strings.Contains(body, line) {
			t.Errorf("/metrics has no %q:\n%s", line, body)
		}
	}
	remove()
	if body := scrape(); strings.Contains(body, "test_latency") {
		t.Errorf("/metrics still has the removed producer's metric:\n%s", body)
	}
}
