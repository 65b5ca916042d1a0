package gateway

import "time"

// rateWindow is how long refused frames count towards closing with 4429.
const rateWindow = 10 * time.Second

// limiter is the token bucket of the frames one connection sends, with the
// count of the frames it refused lately: the session warns on the first
// and closes past a burst of them. Its session's reader owns it, so it
// needs no lock (golang.org/x/time/rate's Limiter takes a mutex on every
// frame and counts no refusals). Rate and burst stay in the gateway's
// config rather than in each connection.
type limiter struct {
	tokens  float64   // frames it may send now
	refill  time.Time // when tokens was last topped up
	dropped int       // frames refused since window
	window  time.Time // start of the current window of refusals
}

// newLimiter is a full bucket.
func newLimiter(burst int) limiter {
	return limiter{tokens: float64(burst), refill: time.Now()}
}

// take spends a token at now, the bucket refilling at rate per second up
// to burst. Without a token it reports false and how many frames it has
// refused in the current rateWindow, this one included.
func (l *limiter) take(now time.Time, rate float64, burst int) (ok bool, dropped int) {
	l.tokens = min(float64(burst), l.tokens+now.Sub(l.refill).Seconds()*rate)
	l.refill = now
	if l.tokens >= 1 {
		l.tokens--
		return true, 0
	}
	if now.Sub(l.window) > rateWindow {
		l.window, l.dropped = now, 0
	}
	l.dropped++
	return false, l.dropped
}
