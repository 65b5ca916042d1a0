package history_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wsgate/wsgate/api/wire"
	"github.com/wsgate/wsgate/services/edge/internal/history"
	"github.com/wsgate/wsgate/services/internal/testkit"
)

// BenchmarkRecover: one op = a lone replay of a user's 10 missed messages,
// which interleave with 99 other users' (file store, 1,000 messages after
// since): what a reconnect costs the edge, and allocates, outside a storm.
func BenchmarkRecover(b *testing.B) {
	ns := testkit.RunJetStream(b)
	nc := testkit.Connect(b, ns.ClientURL())
	h := ensured(b, nc, history.Config{Storage: history.StorageFile, MaxPerSubject: 100, Replays: 1, ReplayTimeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const users, missed = 100, 10
	for range missed {
		for u := range users {
			store(b, nc, fmt.Sprintf("ws.send.user.u%d", u))
		}
	}
	since := wire.Since{Epoch: h.Epoch(), Seq: 0}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := h.Recover(ctx, &since, history.Targets{User: fmt.Sprintf("u%d", i%users)})
		if !r.Recovery.Recovered || r.Recovery.Count != missed {
			b.Fatalf("%+v (%s), want %d recovered", r.Recovery, r.Reason, missed)
		}
	}
}
