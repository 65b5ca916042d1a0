package stats

import (
	"context"
	"maps"
	"slices"
	"testing"

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
