package main

import (
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func stepResult(rate, p99 float64) *result {
	r := &result{Received: 1000, RunSeconds: 10}
	r.Params.Rate = rate
	r.Latency.P50, r.Latency.P99 = p99/4, p99
	r.Derived.ServerCPUPercent = rate / 10
	return r
}

func TestStandardPictures_StepsOfBothGateways(t *testing.T) {
	specs := []spec{
		{name: "unicast-max", steps: []float64{1000, 2000}},
		{name: "idle"}, // no steps: no picture
	}
	cells := map[string]map[string]*cell{
		"unicast-max": {
			// The failing 2000/s step was tried twice: the last try is drawn.
			"wsgate":     {steps: []*result{stepResult(1000, 2), stepResult(2000, 50), stepResult(2000, 8)}},
			"centrifugo": {steps: []*result{stepResult(1000, 12)}},
		},
		"idle": {"wsgate": {}, "centrifugo": {}},
	}
	dir := t.TempDir()
	pics, err := standardPictures("standard", specs, cells, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(pics) != 2 {
		t.Fatalf("pictures %v, want latency and CPU of unicast-max", pics)
	}
	for _, p := range pics {
		f, err := os.Open(filepath.Join(dir, p.file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p.file, err)
		}
	}
	rates, by := lastTryPerRate(cells["unicast-max"]["wsgate"].steps)
	if len(rates) != 2 || by[2000].Latency.P99 != 8 {
		t.Fatalf("rates %v, p99 at 2000/s %v: want the last try", rates, by[2000].Latency.P99)
	}
	sec := renderPictures("standard", pics, nil)
	if !strings.Contains(sec, "![unicast-max: latency against rate](plots/standard-unicast-max-latency.png)") ||
		!strings.Contains(sec, "`bench/.bin/benchall -set standard`") {
		t.Fatalf("pictures section:\n%s", sec)
	}
}
