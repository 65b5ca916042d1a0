package load

import (
	"math"
	"testing"
	"time"
)

// TestDerive_AchievedRateCountsTheSlowPublisher: a publisher that needs
// longer than the run's window to take its messages (Centrifugo's API
// answering slower than asked, every request in flight) gets the rate it
// achieved, not the rate asked; one that keeps up gets the rate asked.
func TestDerive_AchievedRateCountsTheSlowPublisher(t *testing.T) {
	cfg := Config{Scenario: Unicast, Rate: 12000, Duration: 10 * time.Second}
	for _, tc := range []struct {
		name    string
		publish float64 // seconds until the publisher took the last message
		want    float64
	}{
		{"kept up", 10.0, 12000},
		{"fell behind", 11.5, 120000 / 11.5},
	} {
		res := &Result{Sent: 120000, PublishSeconds: tc.publish}
		derive(res, 10000, 12, cfg, 0)
		if math.Abs(res.AchievedRate-tc.want) > 1e-6 {
			t.Errorf("%s: achieved %.1f/s, want %.1f/s", tc.name, res.AchievedRate, tc.want)
		}
	}
}
