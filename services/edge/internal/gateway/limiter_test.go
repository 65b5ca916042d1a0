package gateway

import (
	"testing"
	"time"
)

// TestLimiter_BurstThenRateAndRefusalsCountedPerWindow: a full bucket lets
// a burst through at once, then one frame per 1/rate; refusals count up
// within rateWindow and start again after it.
func TestLimiter_BurstThenRateAndRefusalsCountedPerWindow(t *testing.T) {
	const rate, burst = 10.0, 3
	start := time.Now()
	l := newLimiter(burst)
	l.refill = start
	for i := range burst {
		if ok, _ := l.take(start, rate, burst); !ok {
			t.Fatalf("frame %d of the burst refused", i+1)
		}
	}
	for want := 1; want <= 3; want++ {
		if ok, dropped := l.take(start, rate, burst); ok || dropped != want {
			t.Fatalf("over the burst: ok %v, dropped %d, want refused as the %d", ok, dropped, want)
		}
	}
	if ok, _ := l.take(start.Add(100*time.Millisecond), rate, burst); !ok {
		t.Fatal("a frame 1/rate later refused")
	}
	if ok, dropped := l.take(start.Add(110*time.Millisecond), rate, burst); ok || dropped != 4 {
		t.Fatalf("right after: ok %v, dropped %d, want the 4th refusal", ok, dropped)
	}
	later := start.Add(rateWindow + time.Second)
	if ok, _ := l.take(later, rate, burst); !ok {
		t.Fatal("refused after a long pause")
	}
	// The bucket holds at most burst however long the pause.
	for range burst - 1 {
		l.take(later, rate, burst)
	}
	if ok, dropped := l.take(later, rate, burst); ok || dropped != 1 {
		t.Fatalf("a new window: ok %v, dropped %d, want its first refusal", ok, dropped)
	}
}
