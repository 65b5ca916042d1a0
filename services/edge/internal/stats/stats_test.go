package stats

import (
	"context"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestClosed_OnlyDefinedCodesAreLabels: the closes counter's code label
// takes only the close codes DESIGN §2 defines (and 1005); every code a peer
// may choose besides (3000–4999, unknown 1xxx) is counted as "other", so the
// number of series stays fixed whatever clients send.
func TestClosed_OnlyDefinedCodesAreLabels(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	s := New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"), nil)
	for _, code := range []int{1000, 1012, 4500, 1006, 1005} {
		s.Closed(code)
	}
	for code := 3000; code < 5000; code++ {
		if !labelledCloses[code] {
			s.Closed(code)
		}
	}
	s.Closed(1004)
	s.Closed(1016)
	s.Closed(0)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "wsgate.edge.closes" {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				v, _ := p.Attributes.Value("code")
				got[v.AsString()] += p.Value
			}
		}
	}
	want := map[string]int64{"1000": 1, "1012": 1, "4500": 1, "1006": 1, "1005": 1, "other": 2000 - 6 + 3}
	if !maps.Equal(got, want) {
		t.Fatalf("closes by code label %v, want %v (labels %v)", got, want, slices.Sorted(maps.Keys(got)))
	}
}

// TestLatency_EveryWrittenFrameIsInTheHistogram: the delivery latency of
// every frame, whichever connection's shard recorded it, is in the one
// histogram handed to the exporter, in the bucket of its bound (a latency
// equal to a bound is in that bound's bucket, as Prometheus's le says), with
// the sum of the latencies in seconds; frames and bytes add up the same way.
func TestLatency_EveryWrittenFrameIsInTheHistogram(t *testing.T) {
	s := New(nil, nil)
	for i, d := range []time.Duration{50 * time.Microsecond, 3 * time.Millisecond, 5 * time.Millisecond, 3 * time.Second, time.Millisecond} {
		sh := s.Shard() // a shard per connection, in turn
		sh.Latency(d)
		sh.Wrote(1, 100+i)
	}
	sms, err := s.Produce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sms) != 1 || len(sms[0].Metrics) != 1 || sms[0].Metrics[0].Name != "wsgate.edge.delivery.latency" || sms[0].Metrics[0].Unit != "s" {
		t.Fatalf("produced %+v, want the one histogram wsgate.edge.delivery.latency in s", sms)
	}
	h := sms[0].Metrics[0].Data.(metricdata.Histogram[float64])
	if h.Temporality != metricdata.CumulativeTemporality || len(h.DataPoints) != 1 {
		t.Fatalf("histogram %+v, want one cumulative point", h)
	}
	p := h.DataPoints[0]
	want := make([]uint64, len(latencyBounds)+1)
	want[0] = 1                  // 50 µs ≤ 0.0001
	want[3] = 1                  // 1 ms ≤ 0.001
	want[5] = 2                  // 3 ms and 5 ms ≤ 0.005
	want[len(latencyBounds)] = 1 // 3 s > 2.5
	if !slices.Equal(p.BucketCounts, want) || p.Count != 5 || !slices.Equal(p.Bounds, latencyBounds[:]) {
		t.Errorf("buckets %v count %d bounds %v, want %v, 5, %v", p.BucketCounts, p.Count, p.Bounds, want, latencyBounds)
	}
	if sum := 0.00005 + 0.003 + 0.005 + 3 + 0.001; math.Abs(p.Sum-sum) > 1e-9 {
		t.Errorf("sum %v s, want %v", p.Sum, sum)
	}
	if frames, bytes := s.written(); frames != 5 || bytes != 510 {
		t.Errorf("frames %d bytes %d, want 5 and 510", frames, bytes)
	}
}
