package hub

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestCloseAll_SpreadsTheClosesEvenly: shutdown's drain closes client i of
// n exactly (i+1)/n of the spread after it starts (the bubble's clock), so
// that they do not all reconnect elsewhere at once; when its context ends,
// the rest are closed at that moment. Fails when CloseAll closes all at
// once, skips the first slot, or keeps waiting after the context ended.
func TestCloseAll_SpreadsTheClosesEvenly(t *testing.T) {
	const opClose = 0x8
	for _, tc := range []struct {
		name   string
		cancel time.Duration // when the context ends (0: never)
		want   []time.Duration
	}{
		{name: "whole spread", want: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}},
		{name: "context ends", cancel: 2500 * time.Millisecond,
			want: []time.Duration{time.Second, 2 * time.Second, 2500 * time.Millisecond, 2500 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := New(nil, Config{PingInterval: time.Minute, AuthTimeout: time.Minute})
				clients, seen := pipeClients(t, h, len(tc.want))
				for _, c := range clients {
					h.clients[c.ID] = c
				}
				ctx := context.Background()
				if tc.cancel > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.cancel)
					defer cancel()
				}
				start := time.Now()
				h.CloseAll(ctx, 1012, "restart", 4*time.Second)
				synctest.Wait()
				var at []time.Duration
				for i, c := range clients {
					// Clients are closed in the registry map's order: the times are sorted below.
					f := <-seen[i]
					if f.op != opClose {
						t.Fatalf("client %s got opcode %#x, want a close", c.ID, f.op)
					}
					at = append(at, f.at.Sub(start))
				}
				slices.Sort(at)
				for i := range at {
					if at[i] != tc.want[i] {
						t.Fatalf("closes at %v, want %v", at, tc.want)
					}
				}
			})
		})
	}
}
