package history

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestLatestRead_NeverAnswersNothingWithoutAnError: replays that share
// reads under deadlines get the read's value or an error, never the zero
// value without one (a replay would take it for "the stream holds
// nothing"). Many callers with deadlines about as long as a read make a
// deadline and the end of a read they wait for coincide.
func TestLatestRead_NeverAnswersNothingWithoutAnError(t *testing.T) {
	var l latestRead[*int]
	seven := 7
	read := func(context.Context) (*int, error) {
		time.Sleep(200 * time.Microsecond)
		return &seven, nil
	}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 300 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.N(400))*time.Microsecond)
				v, err := l.get(ctx, time.Now(), read)
				cancel()
				if err == nil && v == nil {
					t.Error("no value and no error")
					return
				}
			}
		})
	}
	wg.Wait()
}
