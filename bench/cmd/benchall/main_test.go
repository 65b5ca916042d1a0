package main

import (
	"encoding/json"
	"math"
	"testing"
)

func TestIdleRows_EdgeAloneAndCentrifugosOneProcess(t *testing.T) {
	// Trimmed records of a standard set: wsgate's server is NATS and an
	// edge, Centrifugo's is one process.
	const wsgate = `{"connected": 15000, "run_seconds": 30, "server": {"names": ["natsd", "edge1"],
		"before":     [{"pid": 1, "rss_kib": 15016, "cpu_us": 30000},   {"pid": 2, "rss_kib": 16172, "cpu_us": 20000}],
		"after_ramp": [{"pid": 1, "rss_kib": 30104, "cpu_us": 1520000}, {"pid": 2, "rss_kib": 89272, "cpu_us": 5530000}],
		"after_run":  [{"pid": 1, "rss_kib": 30116, "cpu_us": 1620000}, {"pid": 2, "rss_kib": 90792, "cpu_us": 6330000}]}}`
	const centrifugo = `{"connected": 15000, "run_seconds": 30, "server": {"names": ["centrifugo"],
		"before":     [{"pid": 3, "rss_kib": 20000, "cpu_us": 10000}],
		"after_ramp": [{"pid": 3, "rss_kib": 830000, "cpu_us": 8000000}],
		"after_run":  [{"pid": 3, "rss_kib": 840000, "cpu_us": 11300000}]}}`
	for _, tc := range []struct {
		name, record string
		rss, cpu     float64
	}{
		{"wsgate", wsgate, (89272.0 - 16172) / 15000, (6330000.0 - 5530000) / 15000 / 30},
		{"centrifugo", centrifugo, (830000.0 - 20000) / 15000, (11300000.0 - 8000000) / 15000 / 30},
		{"no gateway process", `{"connected": 10, "run_seconds": 30, "server": {"names": ["natsd"]}}`, math.NaN(), math.NaN()},
	} {
		var r result
		if err := json.Unmarshal([]byte(tc.record), &r); err != nil {
			t.Fatal(err)
		}
		same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) < 1e-9 }
		if got := mGwRSSPerConn.get(&r); !same(got, tc.rss) {
			t.Errorf("%s: RSS per connection %v, want %v", tc.name, got, tc.rss)
		}
		if got := mGwIdleCPU.get(&r); !same(got, tc.cpu) {
			t.Errorf("%s: CPU per connection per second %v, want %v", tc.name, got, tc.cpu)
		}
	}
}
